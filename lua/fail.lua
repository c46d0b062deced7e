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

ARGV[1] id        string   job id
ARGV[2] token     integer  fencing token of the lease
ARGV[3] kind      string   error | timeout | refused (refused never retries)
ARGV[4] error     string   error text with traceback
ARGV[5] jitter    number   0..1 from the client; scales the backoff by 0.5 + jitter / 2

Returns: { new status (queued | delayed | failed), retry delay in ms (0 when none) }
Errors: NOT_FOUND; STALE_TOKEN when the lease was lost (nothing is recorded).
]]

local function fail(KEYS, ARGV)
  local jobs_key, errors_key, ready_key, delayed_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
  local active_key, failed_key, seq_key, stats_key, wake_key = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
  local id, token, kind, error_text = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
  local jitter = tonumber(ARGV[5]) or 1

  local job, code, message = job_under_lease(jobs_key, id, token)
  if not job then return error_reply(code, message) end
  local now = now_ms()
  redis.call('ZREM', active_key, id)
  job.failure = kind

  local retries = tonumber(job.retries) or 0
  if kind == KIND.REFUSED or job.attempts > retries then
    fail_for_good(jobs_key, errors_key, failed_key, stats_key, id, job, now, error_text)
    return { STATUS.FAILED, 0 }
  end

  redis.call('HSET', errors_key, id, error_text)
  incr_stat(stats_key, 'retried')
  local delay = math.min((tonumber(job.backoff) or 0) * 1000 * 2 ^ (job.attempts - 1), MAX_BACKOFF_MS)
  delay = math.floor(delay * (0.5 + jitter / 2))
  if delay <= 0 then
    push_ready(jobs_key, ready_key, seq_key, id, job)
  else
    job.status = STATUS.DELAYED
    job.due = now + delay
    redis.call('HSET', jobs_key, id, cjson.encode(job))
    redis.call('ZADD', delayed_key, int(job.due), id)
  end
  wake_workers(wake_key, 1)
  return { job.status, delay }
end

redis.register_function('psq_fail', fail)
