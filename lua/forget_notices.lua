--[[ psq_forget_notices: the parents' queues have recorded these subtask outcomes.

KEYS[1] notices  ZSET  subtask id -> time it ended (ms)

ARGV[1] id  string  a subtask id; more ids may follow in ARGV[2], ARGV[3], ...

Returns: the number of notices removed.
]]

local function forget_notices(KEYS, ARGV)
  return redis.call('ZREM', KEYS[1], unpack(ARGV))
end

redis.register_function('psq_forget_notices', forget_notices)
