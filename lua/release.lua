--[[ psq_release: hand back jobs a worker leased but never started, many in one call.

A worker that leased more jobs than it could start (prefetch: psq_pop's `extra`) gives back
the ones still waiting, at shutdown or when the job ahead of them turned out slow. Each goes
back to `ready` at the score it was popped with (the record's `rank`), so it keeps its place
ahead of the jobs of its priority that came after it. What psq_pop counted of it is undone,
since it never ran: its attempt, its rate-limit start, and (without a rate limit, where
psq_pop counts the start) its count as started and its wait in the metrics, which is counted
again when a run of it starts. A record without a usable `rank` (none, or computed under
another aging base) goes to the back of its priority instead.

KEYS[1] jobs    HASH    job id -> job record (JSON)
KEYS[2] ready   ZSET    job id -> priority/FIFO score
KEYS[3] active  ZSET    job id -> lease deadline (ms)
KEYS[4] seq     STRING  sequence counter (only for a record without a usable rank)
KEYS[5] wake    LIST    wake-up tokens for idle workers
KEYS[6] config  HASH    queue settings (aging_base: is the rank still comparable?)
KEYS[7] starts  ZSET    token -> start time (ms) of the jobs leased within the rate period
KEYS[8] stats   HASH    counters
KEYS[9] metrics HASH    wait/run time buckets (the waits psq_pop counted are taken back)

ARGV[1] id     string   job id (JOB_ID_PATTERN)
ARGV[2] token  string   fencing token of the lease (TOKEN_LENGTH lowercase hex characters)
then more id/token pairs in ARGV[3], ARGV[4], ... 0..RELEASE_BATCH_MAX pairs in all.

Returns: the number of jobs released. A pair whose token no longer holds the lease (the job
  was reclaimed, cancelled, finished or already released) is skipped.
Errors (nothing is changed): BAD_KEYS; BAD_ARGUMENT: not id/token pairs, a malformed id or
  token, or more than RELEASE_BATCH_MAX pairs.
]]

local function release(KEYS, ARGV)
  local Q = { jobs = KEYS[1], ready = KEYS[2], active = KEYS[3], seq = KEYS[4], wake = KEYS[5],
    config = KEYS[6], starts = KEYS[7], stats = KEYS[8], metrics = KEYS[9] }
  local refused = check_keys(KEYS, 'psq_release')
  if refused then return refused end
  if #ARGV % 2 ~= 0 or #ARGV / 2 > RELEASE_BATCH_MAX then
    return bad_argument('pass at most ' .. RELEASE_BATCH_MAX .. ' id/token pairs')
  end
  for i = 1, #ARGV, 2 do
    local refusal = check_id_token(ARGV[i], ARGV[i + 1], 'pair ' .. ((i + 1) / 2) .. ': ')
    if refusal then return refusal end
  end

  local aging_base = aging_base_of(Q.config)
  local released, counted = 0, 0
  local now = now_ms()
  Q.tally = new_tally()
  for i = 1, #ARGV, 2 do
    local id, token = ARGV[i], ARGV[i + 1]
    local job = job_under_lease(Q.jobs, id, token)
    if job then
      -- psq_start_run counts a start under a rate limit; psq_pop counted the others.
      if not job.rated then
        counted = counted + 1
        observe(Q.tally, 'wait', (job.started or now) - (job.queued_at or now), -1)
      end
      redis.call('ZREM', Q.active, id)
      redis.call('ZREM', Q.starts, token)
      undo_attempt(job)
      job.token = nil
      job.started = nil
      job.worker = nil
      requeue_at_rank(Q, id, job, aging_base, now)
      released = released + 1
    end
  end
  if counted > 0 then
    incr_stat(Q.stats, 'started', -counted)
    record_tally(Q, now)
  end
  wake_workers(Q.wake, released)
  return released
end

redis.register_function('psq_release', release)
