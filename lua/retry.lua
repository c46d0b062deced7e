--[[ psq_retry: move failed jobs back to the queue, with a fresh count of attempts.

KEYS[1] jobs     HASH    job id -> job record (JSON)
KEYS[2] ready    ZSET    job id -> priority/FIFO score
KEYS[3] failed   ZSET    job id -> failed time (ms)
KEYS[4] seq      STRING  sequence counter
KEYS[5] stats    HASH    counters
KEYS[6] wake     LIST    wake-up tokens for idle workers
KEYS[7] config   HASH    queue settings (aging)
KEYS[8] events   STREAM  job events (retried)

ARGV[1] count  integer  1..RETRY_BATCH_MAX, with no ids: retry the oldest `count` failed jobs
ARGV[2] id     string   optional: the first job id (JOB_ID_PATTERN) to retry; more may follow
                        (at most RETRY_BATCH_MAX)

Returns: the ids moved back to the queue (ids not in the failed set, or with a corrupt
  record, are skipped).
Errors (nothing is changed): BAD_KEYS; BAD_ARGUMENT.
]]

local function retry(KEYS, ARGV)
  local Q = { jobs = KEYS[1], ready = KEYS[2], failed = KEYS[3], seq = KEYS[4], stats = KEYS[5],
    wake = KEYS[6], config = KEYS[7], events = KEYS[8], tally = new_tally() }
  local refused = check_keys(KEYS, 'psq_retry')
  if refused then return refused end
  local count = as_int(ARGV[1], 1, RETRY_BATCH_MAX)
  if not count or #ARGV - 1 > RETRY_BATCH_MAX then
    return bad_argument('count must be an integer in 1..' .. RETRY_BATCH_MAX .. ', then at most '
      .. RETRY_BATCH_MAX .. ' ids')
  end
  for i = 2, #ARGV do
    if not is_job_id(ARGV[i]) then return bad_argument('job id ' .. (i - 1) .. ' is malformed') end
  end
  local ids = {}
  if #ARGV > 1 then
    for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
  else
    ids = redis.call('ZRANGE', Q.failed, 0, count - 1)
  end
  local now = now_ms()
  local moved = {}
  for _, id in ipairs(ids) do
    local job = decode_job(redis.call('HGET', Q.jobs, id))
    if job and job.status == STATUS.FAILED and redis.call('ZREM', Q.failed, id) == 1 then
      job.attempts = 0
      job.lost = 0
      job.ended = nil
      push_ready(Q, id, job, now)
      moved[#moved + 1] = id
      note_event(Q.tally, 'retried', id)
    end
  end
  if #moved > 0 then
    incr_stat(Q.stats, 'retried', #moved)
    wake_workers(Q.wake, #moved)
    record_tally(Q, now)
  end
  return moved
end

redis.register_function('psq_retry', retry)
