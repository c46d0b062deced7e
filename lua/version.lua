--[[ psq_version: the version of this library (read-only).

No KEYS, no ARGV.
Returns: the version string, derived from the rendered library text, so the deployment step
  and clients can tell whether the loaded library matches their code.
Errors: BAD_KEYS; BAD_ARGUMENT (any key or argument).
]]

local function version(KEYS, ARGV)
  -- Any keys or arguments are refused, as by every function of the library.
  local refused = check_keys(KEYS, 'psq_version')
  if refused then return refused end
  if #ARGV ~= 0 then return bad_argument('psq_version takes no arguments') end
  return '{{ VERSION }}'
end

redis.register_function { function_name = 'psq_version', callback = version, flags = { 'no-writes' } }
