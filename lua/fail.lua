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
KEYS[11] config   HASH    queue settings (aging)

ARGV[1] id        string   job id
ARGV[2] token     integer  fencing token of the lease
ARGV[3] kind      string   error | timeout | refused (refused never retries)
ARGV[4] error     string   error text with traceback
ARGV[5] jitter    number   0..1 from the client; scales the backoff by 0.5 + jitter / 2

Returns: { new status (queued | delayed | failed), retry delay in ms (0 when none) }
Errors: NOT_FOUND; STALE_TOKEN when the lease was lost (nothing is recorded).
]]

local function fail(KEYS, ARGV)
  local Q = { jobs = KEYS[1], errors = KEYS[2], ready = KEYS[3], delayed = KEYS[4], active = KEYS[5],
    failed = KEYS[6], seq = KEYS[7], stats = KEYS[8], wake = KEYS[9], notices = KEYS[10], config = KEYS[11] }
  local id, token, kind, error_text = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
  local jitter = tonumber(ARGV[5]) or 1

  local job, code, message = job_under_lease(Q.jobs, id, token)
  if not job then return error_reply(code, message) end
  local now = now_ms()
  redis.call('ZREM', Q.active, id)
  job.failure = kind

  local retries = tonumber(job.retries) or 0
  if kind == KIND.REFUSED or job.attempts > retries then
    fail_for_good(Q, id, job, now, error_text)
    slot_freed(Q)
    return { STATUS.FAILED, 0 }
  end

  redis.call('HSET', Q.errors, id, error_text)
  incr_stat(Q.stats, 'retried')
  local delay = math.min((tonumber(job.backoff) or 0) * 1000 * 2 ^ (job.attempts - 1), MAX_BACKOFF_MS)
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
  return { job.status, delay }
end

redis.register_function('psq_fail', fail)
