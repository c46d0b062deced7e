-- Shared helpers and constants, rendered once at the top of the library.
-- The constants come from pyscheduler/protocol.py (the single source of truth).
-- Included by library.lua.j2; the operation files call these, never copy them.
-- Helpers that touch several keys take `Q`, a table of the calling operation's KEYS by name
-- (jobs, ready, ...); each operation's header lists the keys it passes.

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
local RELEASE_BATCH_MAX = {{ RELEASE_BATCH_MAX }}
local COMPLETE_BATCH_MAX = {{ COMPLETE_BATCH_MAX }}
local WAKE_TOKENS_MAX = {{ WAKE_TOKENS_MAX }}
local PAST_TOLERANCE_MS = {{ PAST_TOLERANCE_MS }}
local MAX_LOST_LEASES = {{ MAX_LOST_LEASES }}
local MAX_BACKOFF_MS = {{ MAX_BACKOFF_MS }}
local NOTICE_REDRIVE_MS = {{ NOTICE_REDRIVE_MS }}

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

-- Many jobs' reads and writes of one key go in one command, so a call handling many jobs pays
-- Redis's per-command cost once, not once per job. unpack() handles only a few thousand
-- values, so long argument lists are sent in chunks of CALL_CHUNK values (even: whole pairs).
local CALL_CHUNK = 1000

-- HMGET of any number of fields: the values in the order of `fields`, false where missing.
local function hmget_many(key, fields)
  local values = {}
  for first = 1, #fields, CALL_CHUNK do
    local chunk = redis.call('HMGET', key, unpack(fields, first, math.min(first + CALL_CHUNK - 1, #fields)))
    for i = 1, #chunk do values[first + i - 1] = chunk[i] end
  end
  return values
end

-- A batch of writes (HSET field value, ZADD score member, ZREM member, ...: one value or one
-- pair per write, no options) gathered job by job and sent with one command per command and
-- key by flush_writes, each in the order the writes were queued.
local function new_writes()
  return { order = {}, by_key = {} }
end

-- Write `command key a [b]` now, or with a batch `W`, queue it for flush_writes.
local function write(W, command, key, a, b)
  if not W then
    if b == nil then return redis.call(command, key, a) end
    return redis.call(command, key, a, b)
  end
  local commands = W.by_key[key]
  if not commands then
    commands = {}
    W.by_key[key] = commands
  end
  local args = commands[command]
  if not args then
    args = {}
    commands[command] = args
    W.order[#W.order + 1] = { command, key, args }
  end
  args[#args + 1] = a
  if b ~= nil then args[#args + 1] = b end
end

-- Send a batch's writes (nothing when none was queued) and empty it.
local function flush_writes(W)
  for _, entry in ipairs(W.order) do
    local command, key, args = entry[1], entry[2], entry[3]
    for first = 1, #args, CALL_CHUNK do
      redis.call(command, key, unpack(args, first, math.min(first + CALL_CHUNK - 1, #args)))
    end
  end
  W.order = {}
  W.by_key = {}
end

-- Without aging: higher priority first, FIFO within a priority. With aging (priority levels
-- gained per second of waiting), a job's effective priority is priority + aging * waited, so
-- it ranks as if queued priority / aging seconds earlier: the score is that virtual queue time
-- (ms since the queue's aging base, set when aging was turned on) times AGED_SEQUENCE_SPAN,
-- plus a sequence number for FIFO. Scores stay exact integers for about 99 days after the
-- base; later, jobs queued in the same millisecond may leave in any order.
local AGED_SEQUENCE_SPAN = 1048576
local function ready_score(priority, sequence, aging, now)
  if aging then
    local virtual_ms = math.floor(now - aging.base - priority * 1000 / aging.rate)
    return virtual_ms * AGED_SEQUENCE_SPAN + sequence % AGED_SEQUENCE_SPAN
  end
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

-- Put a job at the back of its priority in the ready set (uses Q.jobs, Q.ready, Q.seq, and
-- Q.config when the operation passes it, for the queue's aging rate).
local function push_ready(Q, id, job, now)
  now = now or now_ms()
  job.status = STATUS.QUEUED
  job.due = nil
  job.queued_at = now
  redis.call('HSET', Q.jobs, id, cjson.encode(job))
  local sequence = redis.call('INCR', Q.seq)
  local aging
  if Q.config then
    local setting = redis.call('HMGET', Q.config, 'aging', 'aging_base')
    if setting[1] then aging = { rate = tonumber(setting[1]), base = tonumber(setting[2]) or 0 } end
  end
  redis.call('ZADD', Q.ready, int(ready_score(job.priority, sequence, aging, now)), id)
end

-- A subtask's end is noted in its own queue until its parent's queue has recorded it
-- (Q.notices); the worker delivers it, and psq_stale_notices re-drives it after a crash.
-- With a batch `W` (new_writes) the write is queued there.
local function note_subtask_end(Q, id, job, now, W)
  if job.parent then write(W, 'ZADD', Q.notices, int(now), id) end
end

-- The failed set keeps the job for inspection; the record stays until purged
-- (uses Q.jobs, Q.errors, Q.failed, Q.stats, Q.notices).
local function fail_for_good(Q, id, job, now, reason)
  job.status = STATUS.FAILED
  job.ended = now
  redis.call('HSET', Q.jobs, id, cjson.encode(job))
  redis.call('HSET', Q.errors, id, reason)
  redis.call('ZADD', Q.failed, int(now), id)
  incr_stat(Q.stats, 'failed')
  note_subtask_end(Q, id, job, now)
end

-- A record that cannot be decoded is moved to failed with the reason, raw text kept.
local function fail_corrupt(Q, id, now)
  redis.call('HSET', Q.errors, id, 'corrupt job record: not a JSON object with status, func and priority')
  redis.call('ZADD', Q.failed, int(now), id)
  incr_stat(Q.stats, 'failed')
end

-- Drop the records of finished jobs whose result TTL has passed, a bounded batch per call:
-- SWEEP_BATCH, or `limit` when given (uses Q.finished, Q.jobs, Q.payloads, Q.results, Q.errors,
-- Q.checkpoints).
local function sweep_finished(Q, now, limit)
  local expired = redis.call('ZRANGEBYSCORE', Q.finished, '-inf', int(now), 'LIMIT', 0, limit or SWEEP_BATCH)
  if #expired == 0 then return end
  redis.call('ZREM', Q.finished, unpack(expired))
  for _, key in ipairs({ Q.jobs, Q.payloads, Q.results, Q.errors, Q.checkpoints }) do
    redis.call('HDEL', key, unpack(expired))
  end
end

-- Keep a finished job (complete or cancelled) until its result TTL passes; its subtask
-- outcomes (`subtasks_key`, may not exist) expire with it. With a batch `W` (new_writes) the
-- ZADD is queued there (the PEXPIRE, one key per job, is done at once).
local function keep_finished(finished_key, subtasks_key, id, job, now, W)
  local ttl_ms = math.floor((job.result_ttl or 0) * 1000)
  write(W, 'ZADD', finished_key, int(now + ttl_ms), id)
  if job.split then redis.call('PEXPIRE', subtasks_key, math.max(1, ttl_ms)) end
end

-- Jobs left `active` under a concurrency limit: wake a worker per freed slot, `freed` of them
-- (default 1) (uses Q.config, Q.wake).
local function slot_freed(Q, freed)
  freed = freed or 1
  if freed <= 0 then return end
  if redis.call('HEXISTS', Q.config, 'concurrency') == 1 then wake_workers(Q.wake, freed) end
end

-- The job when `token` is the fencing token of its current lease, given its record as stored
-- (`raw`: false or nil when there is none); otherwise nil, an error code and a message. A job
-- that was reclaimed, finished or cancelled is no longer active, so its old token is refused
-- even before the next pop issues a new one.
local function check_lease(raw, id, token)
  if not raw then return nil, ERR.NOT_FOUND, 'job ' .. id .. ' does not exist' end
  local job = decode_job(raw)
  if not job or job.status ~= STATUS.ACTIVE or int(job.token) ~= token then
    return nil, ERR.STALE_TOKEN, 'job ' .. id .. ': token ' .. token .. ' does not hold the lease'
  end
  return job
end

-- check_lease on the record in `jobs_key`.
local function job_under_lease(jobs_key, id, token)
  return check_lease(redis.call('HGET', jobs_key, id), id, token)
end

-- Finish a job whose lease the caller checked (check_lease): store its result, move it from
-- `active` to `finished` and note a subtask's end; returns its run time in ms (lease start to
-- `now`) and its new record. `subtasks_key` is the job's own subtask outcomes (may not exist).
-- With a batch `W` (new_writes) the writes are queued there for the caller's flush_writes. The
-- caller does the once-per-call work: count it in stats, sweep_finished (after the flush) and
-- slot_freed (uses Q.jobs, Q.results, Q.active, Q.finished, Q.notices).
local function complete_leased(Q, subtasks_key, id, job, result, now, W)
  job.status = STATUS.COMPLETE
  job.ended = now
  local record = cjson.encode(job)
  write(W, 'HSET', Q.jobs, id, record)
  write(W, 'HSET', Q.results, id, result)
  write(W, 'ZREM', Q.active, id)
  keep_finished(Q.finished, subtasks_key, id, job, now, W)
  note_subtask_end(Q, id, job, now, W)
  return now - (job.started or now), record
end
