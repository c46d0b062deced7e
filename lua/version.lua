--[[ psq_version: the version of this library (read-only).

No KEYS, no ARGV.
Returns: the version string, derived from the rendered library text, so the deployment step
  and clients can tell whether the loaded library matches their code.
]]

local function version()
  return '{{ VERSION }}'
end

redis.register_function { function_name = 'psq_version', callback = version, flags = { 'no-writes' } }
