--[[ psq_list_schedules: a queue's schedules with their next ticks (read-only).

KEYS[1] schedules  HASH  schedule name -> definition (JSON); at most SCHEDULES_MAX fields
KEYS[2] ticks      ZSET  schedule name -> next tick (ms)

No ARGV.

Returns: { server time in ms, then three entries per schedule, sorted by name: name,
  definition as stored (JSON text), next tick in ms or -1 (paused, or none known) }
Errors: BAD_KEYS; BAD_ARGUMENT.
]]

local function list_schedules(KEYS, ARGV)
  local refused = check_keys(KEYS, 'psq_list_schedules')
  if refused then return refused end
  if #ARGV ~= 0 then return bad_argument('pass no arguments') end
  -- psq_schedule keeps the hash at SCHEDULES_MAX fields; one written by another writer is cut.
  local names = redis.call('HKEYS', KEYS[1])
  table.sort(names)
  local reply = { now_ms() }
  for i = 1, math.min(#names, SCHEDULES_MAX) do
    local name = names[i]
    local score = redis.call('ZSCORE', KEYS[2], name)
    reply[#reply + 1] = name
    reply[#reply + 1] = redis.call('HGET', KEYS[1], name)
    reply[#reply + 1] = score and tonumber(score) or -1
  end
  return reply
end

redis.register_function { function_name = 'psq_list_schedules', callback = list_schedules,
  flags = { 'no-writes' } }
