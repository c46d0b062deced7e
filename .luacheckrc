-- luacheck settings for the rendered library (see tests/test_static_checks.py).
std = "lua51"
read_globals = { "redis", "cjson", "cmsgpack", "bit", "struct" }
max_line_length = 120
