--[[ psq_unschedule: remove a queue's schedule; runs it already made are left as they are.

KEYS[1] schedules  HASH  schedule name -> definition (JSON)
KEYS[2] ticks      ZSET  schedule name -> next tick (ms)

ARGV[1] name  string  the schedule's name (QUEUE_NAME_PATTERN)

Returns: 1 when it was removed, 0 when there was no such schedule.
Errors (nothing is changed): BAD_KEYS; BAD_ARGUMENT.
]]

local function unschedule(KEYS, ARGV)
  local refused = check_keys(KEYS, 'psq_unschedule')
  if refused then return refused end
  if #ARGV ~= 1 or not is_queue_name(ARGV[1]) then return bad_argument('pass one schedule name') end
  redis.call('ZREM', KEYS[2], ARGV[1])
  return redis.call('HDEL', KEYS[1], ARGV[1])
end

redis.register_function('psq_unschedule', unschedule)
