--[[ psq_heartbeat: a worker says it is alive (or that it leaves) in one queue it takes.

A worker on several queues sends one call per queue (in one pipeline), so each call keeps to
one queue's keys. Its entry expires `ttl_ms` after the call unless the next heartbeat renews
it: a worker that dies disappears by itself.

KEYS[1] workers      ZSET  worker name -> heartbeat expiry (ms, server clock)
KEYS[2] worker_info  HASH  worker name -> worker record (JSON, see below)

ARGV[1] name         string   1..WORKER_NAME_MAX_BYTES bytes, no control characters
ARGV[2] ttl_ms       integer  0..WORKER_TTL_MS_MAX; 0: the worker leaves (its entry is removed
                              at once) and no more arguments follow
ARGV[3] host         string   1..WORKER_HOST_MAX_BYTES bytes, no control characters
ARGV[4] pid          integer  1..PID_MAX
ARGV[5] concurrency  integer  1..WORKER_CONCURRENCY_MAX
ARGV[6] uptime_ms    integer  0..DELAY_MS_MAX, how long the worker has run
ARGV[7] processed    integer  0..COUNT_MAX, jobs it finished (completed or failed)
ARGV[8] failed       integer  0..COUNT_MAX, of those, runs that failed
ARGV[9] queue_count  integer  1..WORKER_QUEUES_MAX, q: the number of queue names that follow
ARGV[10..9+q]        string   the queues the worker takes, in its order (QUEUE_NAME_PATTERN,
                              distinct); this call's queue is one of them
then 0..WORKER_JOBS_MAX triples, the jobs it runs now: job id (JOB_ID_PATTERN), its queue
  (one of the queues above), run time so far in ms (integer 0..DELAY_MS_MAX)

The record: { name, host, pid, concurrency, queues = [names], started_ms, processed, failed,
  jobs = [{ id, queue, started_ms }], last_beat_ms, expires_ms } (times in ms, server clock;
  an empty `jobs` is encoded as {}).

Returns: the entry's expiry (ms, server clock); with ttl_ms 0, 1 when the worker was
  registered here, else 0.
Errors (nothing is changed): BAD_KEYS; BAD_ARGUMENT.
Side work: drops up to SWEEP_BATCH entries that expired (with their records), and extends the
  two keys' own TTL to the longest entry's, so a queue whose workers are gone keeps no keys.
]]

local WORKER_HOST_MAX_BYTES = {{ WORKER_HOST_MAX_BYTES }}
local WORKER_QUEUES_MAX = {{ WORKER_QUEUES_MAX }}
local WORKER_JOBS_MAX = {{ WORKER_JOBS_MAX }}
local WORKER_CONCURRENCY_MAX = {{ WORKER_CONCURRENCY_MAX }}
local WORKER_TTL_MS_MAX = {{ WORKER_TTL_MS_MAX }}
local PID_MAX = 4294967295
-- Counters stay exact integers in a double below 2^53.
local COUNT_MAX = 9007199254740991

-- A name shown to people: 1..limit bytes and no control characters (no line breaks in tables).
local function is_label(value, limit)
  return type(value) == 'string' and #value >= 1 and #value <= limit and not value:find('%c')
end

local function drop_expired(workers_key, info_key, now)
  local expired = redis.call('ZRANGEBYSCORE', workers_key, '-inf', int(now), 'LIMIT', 0, SWEEP_BATCH)
  if #expired == 0 then return end
  redis.call('ZREM', workers_key, unpack(expired))
  redis.call('HDEL', info_key, unpack(expired))
end

-- The keys outlive every entry by at least `ttl_ms` from now (never shortened: another
-- worker's entry may expire later).
local function keep_keys_for(keys, ttl_ms)
  for _, key in ipairs(keys) do
    if redis.call('PTTL', key) < ttl_ms then redis.call('PEXPIRE', key, ttl_ms) end
  end
end

-- The record's fields from ARGV[3..], or nil and what is wrong.
local function worker_fields(ARGV)
  local host = ARGV[3]
  local pid = as_int(ARGV[4], 1, PID_MAX)
  local concurrency = as_int(ARGV[5], 1, WORKER_CONCURRENCY_MAX)
  local uptime = as_int(ARGV[6], 0, DELAY_MS_MAX)
  local processed, failed = as_int(ARGV[7], 0, COUNT_MAX), as_int(ARGV[8], 0, COUNT_MAX)
  local queue_count = as_int(ARGV[9], 1, WORKER_QUEUES_MAX)
  if not is_label(host, WORKER_HOST_MAX_BYTES) then
    return nil, 'host must be 1..' .. WORKER_HOST_MAX_BYTES .. ' bytes without control characters'
  end
  if not pid or not concurrency or not uptime or not processed or not failed then
    return nil, 'pid (1..' .. PID_MAX .. '), concurrency (1..' .. WORKER_CONCURRENCY_MAX
      .. '), uptime_ms (0..' .. DELAY_MS_MAX .. '), processed and failed (0..' .. COUNT_MAX
      .. ') must be integers in range'
  end
  if not queue_count or #ARGV < 9 + queue_count then
    return nil, 'queue_count must be an integer in 1..' .. WORKER_QUEUES_MAX
      .. ', followed by that many queue names'
  end
  local queues, taken = {}, {}
  for i = 10, 9 + queue_count do
    local name = ARGV[i]
    if not is_queue_name(name) or taken[name] then
      return nil, 'queue ' .. (i - 9) .. ' is not a valid queue name, or is listed twice'
    end
    taken[name] = true
    queues[#queues + 1] = name
  end
  local rest = #ARGV - 9 - queue_count
  if rest % 3 ~= 0 or rest / 3 > WORKER_JOBS_MAX then
    return nil, 'after the queues, pass at most ' .. WORKER_JOBS_MAX
      .. ' triples of job id, queue and run time in ms'
  end
  return {
    host = host,
    pid = pid,
    concurrency = concurrency,
    uptime = uptime,
    processed = processed,
    failed = failed,
    queues = queues,
    taken = taken,
    first_job = 10 + queue_count,
  }
end

-- The running jobs of ARGV[first..] (triples), or nil and what is wrong.
local function running_jobs(ARGV, first, taken, now)
  local jobs = {}
  for i = first, #ARGV, 3 do
    local id, queue, ran = ARGV[i], ARGV[i + 1], as_int(ARGV[i + 2], 0, DELAY_MS_MAX)
    if not is_job_id(id) or not taken[queue] or not ran then
      return nil, 'job ' .. ((i - first) / 3 + 1) .. ': pass a job id, one of the listed queues'
        .. ' and a run time in 0..' .. DELAY_MS_MAX .. ' ms'
    end
    jobs[#jobs + 1] = { id = id, queue = queue, started_ms = now - ran }
  end
  return jobs
end

local function heartbeat(KEYS, ARGV)
  local refused = check_keys(KEYS, 'psq_heartbeat')
  if refused then return refused end
  local workers_key, info_key = KEYS[1], KEYS[2]
  local name, ttl_ms = ARGV[1], as_int(ARGV[2], 0, WORKER_TTL_MS_MAX)
  if not is_label(name, WORKER_NAME_MAX_BYTES) then
    return bad_argument('name must be 1..' .. WORKER_NAME_MAX_BYTES .. ' bytes without control characters')
  end
  if not ttl_ms then return bad_argument('ttl_ms must be an integer in 0..' .. WORKER_TTL_MS_MAX) end
  if ttl_ms == 0 then
    if #ARGV ~= 2 then return bad_argument('a worker that leaves passes only its name and ttl_ms 0') end
    local removed = redis.call('ZREM', workers_key, name)
    redis.call('HDEL', info_key, name)
    return removed
  end
  local fields, problem = worker_fields(ARGV)
  if not fields then return bad_argument(problem) end
  local queue = string.match(workers_key, '^' .. KEY_PREFIX .. ':{([^}]*)}:')
  if not fields.taken[queue] then
    return bad_argument('the queues listed do not include this call\'s queue, ' .. queue)
  end
  local now = now_ms()
  local jobs
  jobs, problem = running_jobs(ARGV, fields.first_job, fields.taken, now)
  if not jobs then return bad_argument(problem) end

  drop_expired(workers_key, info_key, now)
  local expires = now + ttl_ms
  redis.call('ZADD', workers_key, int(expires), name)
  redis.call('HSET', info_key, name, cjson.encode({
    name = name,
    host = fields.host,
    pid = fields.pid,
    concurrency = fields.concurrency,
    queues = fields.queues,
    started_ms = now - fields.uptime,
    processed = fields.processed,
    failed = fields.failed,
    jobs = jobs,
    last_beat_ms = now,
    expires_ms = expires,
  }))
  keep_keys_for({ workers_key, info_key }, ttl_ms)
  return expires
end

redis.register_function('psq_heartbeat', heartbeat)
