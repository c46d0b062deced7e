--[[ psq_counts: the size of each state of a queue and its counters (read-only).

KEYS[1] ready     ZSET  job id -> priority/FIFO score
KEYS[2] delayed   ZSET  job id -> due time (ms)
KEYS[3] active    ZSET  job id -> lease deadline (ms)
KEYS[4] failed    ZSET  job id -> failed time (ms)
KEYS[5] finished  ZSET  job id -> time its record expires (ms)
KEYS[6] stats     HASH  counters

No ARGV.
Returns: { ready, delayed, active, failed, finished, then the stats hash as field/value pairs }
]]

local function counts(KEYS)
  local reply = {
    redis.call('ZCARD', KEYS[1]),
    redis.call('ZCARD', KEYS[2]),
    redis.call('ZCARD', KEYS[3]),
    redis.call('ZCARD', KEYS[4]),
    redis.call('ZCARD', KEYS[5]),
  }
  local stats = redis.call('HGETALL', KEYS[6])
  for i = 1, #stats do reply[#reply + 1] = stats[i] end
  return reply
end

redis.register_function { function_name = 'psq_counts', callback = counts, flags = { 'no-writes' } }
