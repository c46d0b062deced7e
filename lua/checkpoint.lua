--[[ psq_checkpoint: save a running job's checkpoint, renew its lease, and pause it if asked.

A paused job goes back to the ready set behind the jobs of its priority already waiting,
keeps its checkpoint, and the run does not count as a failed attempt; its next run (on any
worker) starts from the checkpoint. A preemptible run also pauses when the next job to pop has
a higher priority, has waited PREEMPT_AFTER_MS, and a wake-up token is left (no idle worker
took it, so every slot is busy); it takes that token, since its own slot is the one freed.

KEYS[1] jobs         HASH    job id -> job record (JSON)
KEYS[2] checkpoints  HASH    job id -> last saved checkpoint (JSON text)
KEYS[3] ready        ZSET    job id -> priority/FIFO score
KEYS[4] active       ZSET    job id -> lease deadline (ms)
KEYS[5] seq          STRING  sequence counter
KEYS[6] stats        HASH    counters
KEYS[7] wake         LIST    wake-up tokens for idle workers
KEYS[8] config       HASH    queue settings (aging, max_checkpoint_bytes, no_preemption)
KEYS[9] events       STREAM  job events (paused)

ARGV[1] id          string   job id (JOB_ID_PATTERN)
ARGV[2] token       string   fencing token of the lease (TOKEN_LENGTH lowercase hex characters)
ARGV[3] checkpoint  string   JSON text to save, at most the queue's max_checkpoint_bytes
ARGV[4] lease_ms    integer  1..LEASE_MS_MAX, new lease length from now
ARGV[5] pause       string   '1' to pause the job after saving (time slice used up, or the
                             worker is shutting down), '0' to keep running, 'p' to keep
                             running unless preempted (off with the queue's no_preemption)

Returns: the new lease deadline (ms) when the job keeps running, 0 when it was paused.
Errors (nothing is saved or changed): BAD_KEYS; BAD_ARGUMENT; TOO_LARGE (a checkpoint over
  max_checkpoint_bytes); NOT_FOUND; STALE_TOKEN when the lease was lost.
]]

-- How long a job that would pop before the running one must have waited before it preempts
-- it: a worker between two jobs pops it sooner than that without anyone pausing.
local PREEMPT_AFTER_MS = 2

-- True when the next job to pop has a higher priority than `job`, has waited PREEMPT_AFTER_MS,
-- and no idle worker took the wake-up tokens (an idle worker's BLPOP takes them at once). With
-- aging, a job that only aged past the running one does not preempt it.
local function preempted(Q, job, now)
  if redis.call('LLEN', Q.wake) == 0 or redis.call('HGET', Q.config, 'no_preemption') == '1' then
    return false
  end
  local top = redis.call('ZRANGE', Q.ready, 0, 0)
  if not top[1] then return false end
  local waiting = decode_job(redis.call('HGET', Q.jobs, top[1]))
  return waiting ~= nil and (tonumber(waiting.priority) or 0) > (tonumber(job.priority) or 0)
    and now - (tonumber(waiting.queued_at) or now) >= PREEMPT_AFTER_MS
end

local function checkpoint(KEYS, ARGV)
  local Q = { jobs = KEYS[1], checkpoints = KEYS[2], ready = KEYS[3], active = KEYS[4], seq = KEYS[5],
    stats = KEYS[6], wake = KEYS[7], config = KEYS[8], events = KEYS[9] }
  local refused = check_keys(KEYS, 'psq_checkpoint')
  if refused then return refused end
  if #ARGV ~= 5 then return bad_argument('pass id, token, checkpoint, lease_ms and pause') end
  local id, token, saved = ARGV[1], ARGV[2], ARGV[3]
  local lease_ms = as_int(ARGV[4], 1, LEASE_MS_MAX)
  local refusal = check_id_token(id, token)
  if refusal then return refusal end
  if not lease_ms then return bad_argument('lease_ms must be an integer in 1..' .. LEASE_MS_MAX) end
  if ARGV[5] ~= '0' and ARGV[5] ~= '1' and ARGV[5] ~= 'p' then
    return bad_argument("pause must be '0', '1' or 'p'")
  end
  local pause = ARGV[5] == '1'
  refusal = check_checkpoint(Q.config, id, saved)
  if refusal then return refusal end
  local job, code, message = job_under_lease(Q.jobs, id, token)
  if not job then return error_reply(code, message) end
  redis.call('HSET', Q.checkpoints, id, saved)
  local now = now_ms()
  local preempt = not pause and ARGV[5] == 'p' and preempted(Q, job, now)
  if not pause and not preempt then
    local deadline = now + lease_ms
    redis.call('ZADD', Q.active, 'XX', int(deadline), id)
    return deadline
  end
  redis.call('ZREM', Q.active, id)
  undo_attempt(job)
  job.pauses = (job.pauses or 0) + 1
  job.paused = true
  push_ready(Q, id, job, now)
  incr_stat(Q.stats, 'paused')
  if preempt then
    incr_stat(Q.stats, 'preempted')
    redis.call('LPOP', Q.wake)
  else
    wake_workers(Q.wake, 1)
  end
  Q.tally = new_tally()
  note_event(Q.tally, 'paused', id)
  record_tally(Q, now)
  return 0
end

redis.register_function('psq_checkpoint', checkpoint)
