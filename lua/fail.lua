--[[ psq_fail: record a failed run; retry it later with exponential backoff or fail for good.

KEYS[1] jobs      HASH    job id -> job record (JSON)
KEYS[2] errors    HASH    job id -> error text of the latest failed run
KEYS[3] ready     ZSET    job id -> priority/FIFO score
KEYS[4] delayed   ZSET    job id -> due time (ms)
KEYS[5] active    ZSET    job id -> lease deadline (ms)
KEYS[6] failed    ZSET    job id -> failed time (ms)
KEYS[7] seq       STRING  sequence counter
KEYS[8] stats     HASH    counters
KEYS[9] wake      LIST    wake-up tokens for idle workers
KEYS[10] notices  ZSET    subtask id -> time it ended (its parent is told)
KEYS[11] config   HASH    queue settings (aging, max_error_bytes)
KEYS[12] metrics  HASH    wait/run time buckets, jobs ended per minute (psq_metrics)
KEYS[13] events   STREAM  job events (failed, retried, enqueued: an on_failure callback)
KEYS[14] payloads HASH    job id -> call payload: an on_failure callback's

ARGV[1] id        string   job id (JOB_ID_PATTERN)
ARGV[2] token     string   fencing token of the lease (TOKEN_LENGTH lowercase hex characters)
ARGV[3] kind      string   error | timeout | refused | lost (refused never retries)
ARGV[4] error     string   error text with traceback; over the queue's max_error_bytes it is
                           cut in the middle, keeping its head and its last lines
ARGV[5] jitter    number   0..1 from the client; scales the backoff by 0.5 + jitter / 2
ARGV[6] retry     string   optional: '1' (the default) retries while attempts remain; '0' fails
                           for good now (the error is not one the job's retry_on lists)

Returns: { new status (queued | delayed | failed), retry delay in ms (0 when none) }, and a
  third entry when the job failed for good and other jobs depend on it: its dependents as
  JSON [ [queue, id], ... ] (the caller tells them, psq_dependency_done). A job failing for
  good with an `on_failure` handler enqueues it in the same call (args: id, error text).
Errors (nothing is changed): BAD_KEYS; BAD_ARGUMENT; NOT_FOUND; STALE_TOKEN when the lease was
  lost (nothing is recorded).
]]

local FAIL_KINDS = {
{%- for value in K.values() %}
  ['{{ value }}'] = true,
{%- endfor %}
}

local function fail(KEYS, ARGV)
  local Q = { jobs = KEYS[1], errors = KEYS[2], ready = KEYS[3], delayed = KEYS[4], active = KEYS[5],
    failed = KEYS[6], seq = KEYS[7], stats = KEYS[8], wake = KEYS[9], notices = KEYS[10], config = KEYS[11],
    metrics = KEYS[12], events = KEYS[13], payloads = KEYS[14] }
  local refused = check_keys(KEYS, 'psq_fail')
  if refused then return refused end
  if #ARGV ~= 5 and #ARGV ~= 6 then return bad_argument('pass id, token, kind, error, jitter [and retry]') end
  if ARGV[6] ~= nil and ARGV[6] ~= '0' and ARGV[6] ~= '1' then return bad_argument("retry must be '0' or '1'") end
  local id, token, kind = ARGV[1], ARGV[2], ARGV[3]
  local jitter = as_number(ARGV[5], 0, 1)
  local refusal = check_id_token(id, token)
  if refusal then return refusal end
  if not FAIL_KINDS[kind] then
    return bad_argument('kind must be one of error, timeout, refused, lost')
  end
  if not jitter then return bad_argument('jitter must be a number in 0..1') end
  local error_text = clip_text(ARGV[4], size_limit(Q.config, 'max_error_bytes'))

  local job, code, message = job_under_lease(Q.jobs, id, token)
  if not job then return error_reply(code, message) end
  local now = now_ms()
  redis.call('ZREM', Q.active, id)
  job.failure = kind
  Q.tally = new_tally()
  observe(Q.tally, 'run', now - (job.started or now))

  local retries = job.retries or 0
  if kind == KIND.REFUSED or ARGV[6] == '0' or (job.attempts or 1) > retries then
    fail_for_good(Q, id, job, now, error_text)
    slot_freed(Q)
    record_tally(Q, now)
    if type(job.dependents) == 'table' then return { STATUS.FAILED, 0, cjson.encode(job.dependents) } end
    return { STATUS.FAILED, 0 }
  end

  redis.call('HSET', Q.errors, id, error_text)
  incr_stat(Q.stats, 'retried')
  -- The exponent is bounded so a huge attempt count cannot make 0 * inf (NaN) of the delay.
  local exponent = math.max(0, math.min((job.attempts or 1) - 1, 60))
  local delay = math.min(math.max(0, job.backoff or 0) * 1000 * 2 ^ exponent, MAX_BACKOFF_MS)
  delay = math.floor(delay * (0.5 + jitter / 2))
  if delay <= 0 then
    push_ready(Q, id, job, now)
  else
    job.status = STATUS.DELAYED
    job.due = now + delay
    redis.call('HSET', Q.jobs, id, cjson.encode(job))
    redis.call('ZADD', Q.delayed, int(job.due), id)
  end
  wake_workers(Q.wake, 1)
  note_event(Q.tally, 'retried', id)
  record_tally(Q, now)
  return { job.status, delay }
end

redis.register_function('psq_fail', fail)
