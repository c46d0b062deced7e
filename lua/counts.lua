--[[ psq_counts: the size of each state of a queue and its counters (read-only).

KEYS[1] ready     ZSET  job id -> priority/FIFO score
KEYS[2] delayed   ZSET  job id -> due time (ms)
KEYS[3] active    ZSET  job id -> lease deadline (ms)
KEYS[4] failed    ZSET  job id -> failed time (ms)
KEYS[5] finished  ZSET  job id -> time its record expires (ms)
KEYS[6] stats     HASH  counters
KEYS[7] waiting   ZSET  job id -> time it began to wait (ms)
KEYS[8] config    HASH  queue settings
KEYS[9] jobs      HASH  job id -> job record (JSON)

No ARGV.
Returns: { ready, delayed, active, failed, finished, waiting, age in ms of the job that has
  waited longest among the next 100 to run (-1 when none is ready), number of setting
  pairs n, then n setting field/value pairs, then the stats hash as field/value pairs }
Errors: BAD_KEYS; BAD_ARGUMENT (any argument).
]]

local AGE_SAMPLE = 100

local function oldest_ready_age(ready_key, jobs_key, now)
  local ids = redis.call('ZRANGE', ready_key, 0, AGE_SAMPLE - 1)
  if #ids == 0 then return -1 end
  local oldest = now
  for _, raw in ipairs(redis.call('HMGET', jobs_key, unpack(ids))) do
    local job = decode_job(raw)
    if job and type(job.queued_at) == 'number' and job.queued_at < oldest then oldest = job.queued_at end
  end
  return now - oldest
end

local function counts(KEYS, ARGV)
  local refused = check_keys(KEYS, 'psq_counts')
  if refused then return refused end
  if #ARGV ~= 0 then return bad_argument('psq_counts takes no arguments') end
  local reply = {
    redis.call('ZCARD', KEYS[1]),
    redis.call('ZCARD', KEYS[2]),
    redis.call('ZCARD', KEYS[3]),
    redis.call('ZCARD', KEYS[4]),
    redis.call('ZCARD', KEYS[5]),
    redis.call('ZCARD', KEYS[7]),
    oldest_ready_age(KEYS[1], KEYS[9], now_ms()),
  }
  local settings = redis.call('HGETALL', KEYS[8])
  reply[#reply + 1] = #settings / 2
  for i = 1, #settings do reply[#reply + 1] = settings[i] end
  local stats = redis.call('HGETALL', KEYS[6])
  for i = 1, #stats do reply[#reply + 1] = stats[i] end
  return reply
end

redis.register_function { function_name = 'psq_counts', callback = counts, flags = { 'no-writes' } }
