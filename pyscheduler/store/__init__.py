"""The store: key names, the table of library operations, the Lua library and its call wrappers."""
