--[[ psq_metrics: the metrics the library keeps for one queue (read-only).

The calls that move jobs keep them as they go: counters in `stats`; wait and run times, and
jobs ended per minute (a ring of one slot per minute of a day), in `metrics`. This reads them
all in one bounded call, with the number of the queue's live workers.

KEYS[1] stats    HASH  counters
KEYS[2] metrics  HASH  "wait:<le ms>", "run:<le ms>" -> runs in that bucket ("inf" last),
                       "<name>:sum_ms", "<name>:count"; "minute:<minute mod
                       THROUGHPUT_MINUTES>" -> "<minute>:<completed>:<failed>"
KEYS[3] workers  ZSET  worker name -> heartbeat expiry (ms)

ARGV[1] minutes  integer  1..THROUGHPUT_MINUTES, how many minutes of throughput to return
                          (the current one included)

Returns: { server time (ms), live workers (heartbeat not expired),
  #HISTOGRAM_BOUNDS_MS + 1 wait bucket counts (not cumulative, +Inf last), wait sum (ms),
  wait count, then the same for run, the number of throughput points n, then n triples
  minute start (ms), completed, failed (oldest first; minutes without a record left out),
  then the stats hash as field/value pairs }
Errors: BAD_KEYS; BAD_ARGUMENT.
]]

local function histogram_reply(reply, key, name)
  for _, value in ipairs(redis.call('HMGET', key, unpack(histogram_fields(name)))) do
    reply[#reply + 1] = stored_count(value)
  end
end

local function metrics(KEYS, ARGV)
  local refused = check_keys(KEYS, 'psq_metrics')
  if refused then return refused end
  if #ARGV ~= 1 then return bad_argument('pass minutes, got ' .. #ARGV .. ' arguments') end
  local minutes = as_int(ARGV[1], 1, THROUGHPUT_MINUTES)
  if not minutes then
    return bad_argument('minutes must be an integer in 1..' .. THROUGHPUT_MINUTES)
  end
  local now = now_ms()
  local reply = { now, redis.call('ZCOUNT', KEYS[3], '(' .. int(now), '+inf') }
  histogram_reply(reply, KEYS[2], 'wait')
  histogram_reply(reply, KEYS[2], 'run')

  local current = math.floor(now / 60000)
  local slots = {}
  for m = current - minutes + 1, current do
    slots[#slots + 1] = 'minute:' .. int(m % THROUGHPUT_MINUTES)
  end
  local stored = hmget_many(KEYS[2], slots)
  local at = #reply + 1
  reply[at] = 0
  for n = 1, #slots do
    local minute = current - minutes + n
    local text = stored[n]
    if text then
      local stamp, completed, failed = string.match(text, '^(%d+):(%d+):(%d+)$')
      if tonumber(stamp) == minute then
        reply[#reply + 1] = minute * 60000
        reply[#reply + 1] = tonumber(completed)
        reply[#reply + 1] = tonumber(failed)
        reply[at] = reply[at] + 1
      end
    end
  end
  local stats = redis.call('HGETALL', KEYS[1])
  for i = 1, #stats do reply[#reply + 1] = stats[i] end
  return reply
end

redis.register_function { function_name = 'psq_metrics', callback = metrics, flags = { 'no-writes' } }
