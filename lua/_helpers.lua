-- Shared helpers and constants, rendered once at the top of the library.
-- The constants come from pyscheduler/protocol.py (the single source of truth).
-- Included by library.lua.j2; the operation files call these, never copy them.

local STATUS = {
{%- for name, value in S.items() %}
  {{ name }} = '{{ value }}',
{%- endfor %}
}
local ERR = {
{%- for name, value in E.items() %}
  {{ name }} = '{{ value }}',
{%- endfor %}
}
local KIND = {
{%- for name, value in K.items() %}
  {{ name }} = '{{ value }}',
{%- endfor %}
}
local PRIORITY_MIN = {{ PRIORITY_MIN }}
local PRIORITY_MAX = {{ PRIORITY_MAX }}
local SEQUENCE_SPAN = {{ SEQUENCE_SPAN }}
local PROMOTE_BATCH = {{ PROMOTE_BATCH }}
local RECLAIM_BATCH = {{ RECLAIM_BATCH }}
local SWEEP_BATCH = {{ SWEEP_BATCH }}
local ENQUEUE_BATCH_MAX = {{ ENQUEUE_BATCH_MAX }}
local WAKE_TOKENS_MAX = {{ WAKE_TOKENS_MAX }}
local PAST_TOLERANCE_MS = {{ PAST_TOLERANCE_MS }}
local MAX_LOST_LEASES = {{ MAX_LOST_LEASES }}
local MAX_BACKOFF_MS = {{ MAX_BACKOFF_MS }}

-- Milliseconds from the Redis server's clock, so clients with skewed clocks agree.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Integers are passed to Redis as exact decimal strings: Lua's default number format
-- keeps 14 digits, too few for ready-set scores.
local function int(n)
  return string.format('%.0f', n)
end

local function error_reply(code, message)
  return redis.error_reply(code .. ' ' .. message)
end

local function ready_score(priority, sequence)
  return (PRIORITY_MAX - priority) * SEQUENCE_SPAN + sequence
end

-- A job record that is not a JSON object with the fields every call relies on decodes to
-- nil instead of raising, so one corrupt record cannot break a call that handles many jobs.
local function decode_job(raw)
  if not raw then return nil end
  local ok, job = pcall(cjson.decode, raw)
  if ok and type(job) == 'table' and type(job.status) == 'string' and type(job.func) == 'string'
      and type(job.priority) == 'number' then
    return job
  end
  return nil
end

local function incr_stat(stats_key, field, amount)
  redis.call('HINCRBY', stats_key, field, amount or 1)
end

local function wake_workers(wake_key, count)
  if count <= 0 then return end
  local args = {}
  for i = 1, math.min(count, WAKE_TOKENS_MAX) do args[i] = '1' end
  redis.call('LPUSH', wake_key, unpack(args))
  redis.call('LTRIM', wake_key, 0, WAKE_TOKENS_MAX - 1)
end

-- Put a job at the back of its priority in the ready set.
local function push_ready(jobs_key, ready_key, seq_key, id, job)
  job.status = STATUS.QUEUED
  job.due = nil
  redis.call('HSET', jobs_key, id, cjson.encode(job))
  local sequence = redis.call('INCR', seq_key)
  redis.call('ZADD', ready_key, int(ready_score(job.priority, sequence)), id)
end

-- The failed set keeps the job for inspection; the record stays until purged.
local function fail_for_good(jobs_key, errors_key, failed_key, stats_key, id, job, now, reason)
  job.status = STATUS.FAILED
  job.ended = now
  redis.call('HSET', jobs_key, id, cjson.encode(job))
  redis.call('HSET', errors_key, id, reason)
  redis.call('ZADD', failed_key, int(now), id)
  incr_stat(stats_key, 'failed')
end

-- A record that cannot be decoded is moved to failed with the reason, raw text kept.
local function fail_corrupt(errors_key, failed_key, stats_key, id, now)
  redis.call('HSET', errors_key, id, 'corrupt job record: not a JSON object with status, func and priority')
  redis.call('ZADD', failed_key, int(now), id)
  incr_stat(stats_key, 'failed')
end

-- Drop the records of finished jobs whose result TTL has passed, a bounded batch per call.
local function sweep_finished(finished_key, jobs_key, payloads_key, results_key, errors_key, now)
  local expired = redis.call('ZRANGEBYSCORE', finished_key, '-inf', int(now), 'LIMIT', 0, SWEEP_BATCH)
  if #expired == 0 then return end
  redis.call('ZREM', finished_key, unpack(expired))
  redis.call('HDEL', jobs_key, unpack(expired))
  redis.call('HDEL', payloads_key, unpack(expired))
  redis.call('HDEL', results_key, unpack(expired))
  redis.call('HDEL', errors_key, unpack(expired))
end

-- Keep a finished job (complete or cancelled) until its result TTL passes.
local function keep_finished(finished_key, id, job, now)
  redis.call('ZADD', finished_key, int(now + (job.result_ttl or 0) * 1000), id)
end

-- The job when `token` is the fencing token of its current lease; otherwise nil, an error
-- code and a message. A job that was reclaimed, finished or cancelled is no longer active,
-- so its old token is refused even before the next pop issues a new one.
local function job_under_lease(jobs_key, id, token)
  local raw = redis.call('HGET', jobs_key, id)
  if not raw then return nil, ERR.NOT_FOUND, 'job ' .. id .. ' does not exist' end
  local job = decode_job(raw)
  if not job or job.status ~= STATUS.ACTIVE or int(job.token) ~= token then
    return nil, ERR.STALE_TOKEN, 'job ' .. id .. ': token ' .. token .. ' does not hold the lease'
  end
  return job
end
