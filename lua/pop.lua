--[[ psq_pop: lease the next jobs of a queue to a worker.

First it promotes due delayed jobs, makes the runs of due schedule ticks (_schedules.lua) and
reclaims expired leases (a bounded batch each); a
reclaimed job goes back to its popped score (`rank`), one that lost more than `max_lost_leases`
leases fails for good. With nothing ready it sweeps expired finished records (bounded). It
enforces paused, concurrency and rate per period_ms across all workers. Each leased record
keeps its exact score as `rank` and the aging base as `rank_base` (see psq_release).

KEYS[1]  jobs         HASH    job id -> job record (JSON)
KEYS[2]  payloads     HASH    job id -> call payload (JSON text)
KEYS[3]  errors       HASH    job id -> error text
KEYS[4]  ready        ZSET    job id -> priority/FIFO score
KEYS[5]  delayed      ZSET    job id -> due time (ms)
KEYS[6]  active       ZSET    job id -> lease deadline (ms)
KEYS[7]  failed       ZSET    job id -> failed time (ms)
KEYS[8]  seq          STRING  sequence counter, mixed into each lease's fencing token
KEYS[9]  stats        HASH    counters
KEYS[10] wake         LIST    wake-up tokens for idle workers
KEYS[11] results      HASH    job id -> result (JSON text)
KEYS[12] finished     ZSET    job id -> time its record expires (ms)
KEYS[13] checkpoints  HASH    job id -> last saved checkpoint (JSON text)
KEYS[14] notices      ZSET    subtask id -> time it ended (its parent is told)
KEYS[15] config       HASH    queue settings: paused, concurrency, rate, period_ms, aging,
                              max_lost_leases
KEYS[16] starts       ZSET    token -> start time (ms) of the jobs leased within the rate period
KEYS[17] metrics      HASH    wait/run time buckets, jobs ended per minute
KEYS[18] events       STREAM  job events (started, failed)
KEYS[19] schedules    HASH    schedule name -> definition (JSON), for the periodic jobs' runs
KEYS[20] ticks        ZSET    schedule name -> next tick (ms); due ticks become ready jobs

ARGV[1] max_jobs   integer  0..POP_BATCH_MAX, most jobs to lease (0: only `extra`, a busy
                            worker topping up); max_jobs + extra in 1..POP_BATCH_MAX
ARGV[2] lease_ms   integer  1..LEASE_MS_MAX, lease length; the worker renews before it runs out
ARGV[3] worker     string   the worker's name, 1..WORKER_NAME_MAX_BYTES bytes
ARGV[4] extra      integer  0..POP_BATCH_MAX more jobs to hold before they can start
                            (prefetch); ignored on a queue with a concurrency or rate limit
ARGV[5] nonce      string   TOKEN_LENGTH lowercase hex, random per call: a lease's token is
                            sha1hex(nonce .. ':' .. its own seq), cut to TOKEN_LENGTH

A popped job with a malformed id or a corrupt record is moved to failed with the reason. A
popped job never started whose `expires` time has passed ends expired instead of being leased
(counted in stats `expired`; it stays in `finished` until its result TTL passes). No worker
hears of the jobs this call ends: a parent's or dependents' notice of one is written already
due for re-drive (psq_stale_notices).

Returns: { wait_ms, n, then six entries per leased job: id, token, lease_deadline_ms,
           job record (JSON), payload (JSON text), checkpoint (JSON text or false) }
  wait_ms: -1 when jobs were leased or nothing is scheduled, else ms until the next due job,
  lease deadline or rate-window opening (0: call again now); also set when this call filled the
  rate window with jobs still ready. A queue with schedules also gets the ms until its next tick
  when jobs were leased (0: more ticks are due than one call runs).
Errors (nothing is changed): BAD_KEYS; BAD_ARGUMENT.
]]

-- A promoted job's wait starts at its due time, not when a pop got to it.
local function promote_due(Q, now)
  local scored = redis.call('ZRANGEBYSCORE', Q.delayed, '-inf', int(now), 'WITHSCORES', 'LIMIT', 0,
    PROMOTE_BATCH)
  if #scored == 0 then return end
  local due, due_at = {}, {}
  for i = 1, #scored, 2 do
    due[#due + 1] = scored[i]
    due_at[#due_at + 1] = math.min(tonumber(scored[i + 1]) or now, now)
  end
  redis.call('ZREM', Q.delayed, unpack(due))
  local records = hmget_many(Q.jobs, due)
  for n, id in ipairs(due) do
    local job = decode_job(records[n])
    if job then
      push_ready(Q, id, job, now, due_at[n])
    else
      fail_corrupt(Q, id, now)
    end
  end
end

-- Jobs whose lease expired go back to `ready` where they were popped (requeue_at_rank), ahead
-- of the jobs of their priority queued since: their worker died, they did not ask to wait. A
-- job that lost more leases than the queue's `max_lost_leases` fails for good instead.
local function reclaim_expired(Q, now)
  local expired = redis.call('ZRANGEBYSCORE', Q.active, '-inf', int(now), 'LIMIT', 0, RECLAIM_BATCH)
  if #expired == 0 then return end
  redis.call('ZREM', Q.active, unpack(expired))
  local setting = redis.call('HMGET', Q.config, 'max_lost_leases', 'aging_base')
  -- A value written by hand that psq_configure would refuse is ignored.
  local max_lost = as_int(setting[1], 1, MAX_LOST_LEASES_LIMIT) or MAX_LOST_LEASES
  local aging_base = setting[2] or nil
  local records = hmget_many(Q.jobs, expired)
  incr_stat(Q.stats, 'lost_leases', #expired)
  for n, id in ipairs(expired) do
    local job = decode_job(records[n])
    if not job then
      fail_corrupt(Q, id, now)
    else
      job.lost = (job.lost or 0) + 1
      if job.lost > max_lost then
        fail_for_good(Q, id, job, now,
          'lease expired ' .. job.lost .. ' times: the job keeps losing its worker')
      else
        incr_stat(Q.stats, 'reclaimed')
        requeue_at_rank(Q, id, job, aging_base, now)
      end
    end
  end
end

local function first_score(key)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return first[2] and tonumber(first[2]) or nil
end

-- Milliseconds until the rate limit's window lets the next job start (it is full now).
local function rate_wait(Q, period, now)
  local oldest = first_score(Q.starts)
  return oldest and math.max(1, oldest + period - now) or period
end

local function pop(KEYS, ARGV)
  local Q = { jobs = KEYS[1], payloads = KEYS[2], errors = KEYS[3], ready = KEYS[4],
    delayed = KEYS[5], active = KEYS[6], failed = KEYS[7], seq = KEYS[8], stats = KEYS[9],
    wake = KEYS[10], results = KEYS[11], finished = KEYS[12], checkpoints = KEYS[13],
    notices = KEYS[14], config = KEYS[15], starts = KEYS[16], metrics = KEYS[17],
    events = KEYS[18], schedules = KEYS[19], ticks = KEYS[20] }
  local refused = check_keys(KEYS, 'psq_pop')
  if refused then return refused end
  if #ARGV ~= 5 then
    return bad_argument('pass max_jobs, lease_ms, worker, extra and nonce, got ' .. #ARGV .. ' arguments')
  end
  local max_jobs = as_int(ARGV[1], 0, POP_BATCH_MAX)
  local lease_ms = as_int(ARGV[2], 1, LEASE_MS_MAX)
  local worker = ARGV[3]
  local extra = as_int(ARGV[4], 0, POP_BATCH_MAX)
  local nonce = ARGV[5]
  if not max_jobs or not extra or max_jobs + extra < 1 or max_jobs + extra > POP_BATCH_MAX then
    return bad_argument('max_jobs and extra must be integers >= 0 with max_jobs + extra in 1..'
      .. POP_BATCH_MAX)
  end
  if not lease_ms then
    return bad_argument('lease_ms must be an integer in 1..' .. LEASE_MS_MAX)
  end
  if #worker < 1 or #worker > WORKER_NAME_MAX_BYTES then
    return bad_argument('worker must be 1..' .. WORKER_NAME_MAX_BYTES .. ' bytes')
  end
  if not is_token(nonce) then
    return bad_argument('nonce must be ' .. TOKEN_LENGTH .. ' lowercase hex characters')
  end
  local now = now_ms()
  Q.tally = new_tally()
  -- Every job this call ends (expired, corrupt, lost too often) ends without a worker told.
  Q.untold = true

  promote_due(Q, now)
  local next_tick = run_due_ticks(Q, now)
  reclaim_expired(Q, now)

  local reply = { -1, 0 }
  local leased = 0
  local deadline = now + lease_ms
  local limit_wait
  local settings = redis.call('HMGET', Q.config, 'paused', 'concurrency', 'rate', 'period_ms', 'aging_base')
  local concurrency, rate, period = setting_count(settings[2]), setting_count(settings[3]),
    setting_count(settings[4])
  local rank_base = settings[5] or nil
  if settings[1] == '1' then
    max_jobs = 0
  elseif not concurrency and not (rate and period) then
    max_jobs = max_jobs + extra
  end
  if concurrency then
    max_jobs = math.min(max_jobs, concurrency - redis.call('ZCARD', Q.active))
  end
  if rate and period then
    redis.call('ZREMRANGEBYSCORE', Q.starts, '-inf', int(now - period))
    local room = rate - redis.call('ZCARD', Q.starts)
    if room <= 0 then limit_wait = rate_wait(Q, period, now) end
    max_jobs = math.min(max_jobs, room)
  end

  -- Corrupt records are failed and skipped, so fewer than popped may be leased. The popped
  -- jobs' reads and writes of each key are one command for all of them.
  local popped = {}
  if max_jobs > 0 then popped = redis.call('ZPOPMIN', Q.ready, max_jobs) end
  local ids, ranks = {}, {}
  for i = 1, #popped, 2 do
    ids[#ids + 1] = popped[i]
    ranks[#ranks + 1] = popped[i + 1]
  end
  local records = hmget_many(Q.jobs, ids)
  local payloads = hmget_many(Q.payloads, ids)
  local jobs = {}
  for n, id in ipairs(ids) do
    local job = decode_job(records[n])
    if not is_job_id(id) then
      -- Only a writer other than this library makes such an id; Python never sees one.
      redis.call('HSET', Q.errors, id, 'malformed job id: not 1..' .. JOB_ID_MAX
        .. ' letters, digits and _.:- starting with a letter or digit')
      redis.call('ZADD', Q.failed, int(now), id)
      incr_stat(Q.stats, 'failed')
      Q.tally.failed = Q.tally.failed + 1
    elseif not job then
      fail_corrupt(Q, id, now)
    elseif not payloads[n] and job.payload then
      fail_for_good(Q, id, job, now, 'job payload is missing')
    elseif job.expires and job.expires <= now and job.attempts == 0 and not job.split then
      expire_unstarted(Q, id, job, now)
    else
      payloads[n] = payloads[n] or EMPTY_PAYLOAD
      jobs[n] = job
      leased = leased + 1
    end
  end
  if leased > 0 then
    -- Each lease's token mixes the caller's random nonce with a sequence number unique to
    -- the lease, so no one can guess it from tokens seen before.
    local seq = redis.call('INCRBY', Q.seq, leased) - leased
    local checkpoints = hmget_many(Q.checkpoints, ids)
    local writes = new_writes()
    local deadline_score, start_score = int(deadline), int(now)
    -- Under a rate limit a run starts at psq_start_run, which counts it then.
    local started = 0
    for n, id in ipairs(ids) do
      local job = jobs[n]
      if job then
        seq = seq + 1
        local token = lease_token(nonce, seq)
        job.status = STATUS.ACTIVE
        job.attempts = (job.attempts or 0) + 1
        job.token = token
        job.started = now
        job.worker = worker
        job.paused = nil
        job.rank = ranks[n]
        job.rank_base = rank_base
        -- Under a rate limit the worker asks psq_start_run before the handler starts.
        job.rated = (rate and period) and true or nil
        local record = cjson.encode(job)
        write(writes, 'HSET', Q.jobs, id, record)
        write(writes, 'ZADD', Q.active, deadline_score, id)
        local at = #reply
        reply[at + 1] = id
        reply[at + 2] = token
        reply[at + 3] = deadline
        reply[at + 4] = record
        reply[at + 5] = payloads[n]
        reply[at + 6] = checkpoints[n]
        if rate and period then
          write(writes, 'ZADD', Q.starts, start_score, token)
        else
          observe(Q.tally, 'wait', now - (job.queued_at or now))
          note_event(Q.tally, 'started', id)
          started = started + 1
        end
      end
    end
    flush_writes(writes)
    if started > 0 then incr_stat(Q.stats, 'started', started) end
    -- These jobs need no wake-up any more; the tokens left tell psq_checkpoint that ready
    -- jobs wait with no idle worker to take them.
    redis.call('LPOP', Q.wake, leased)
  end
  record_tally(Q, now)
  reply[2] = leased

  if leased > 0 and rate and period and redis.call('ZCARD', Q.starts) >= rate
      and redis.call('ZCARD', Q.ready) > 0 then
    -- This call filled the window: tell the worker when the next start is allowed, since
    -- nothing wakes it then.
    reply[1] = rate_wait(Q, period, now)
  elseif leased == 0 and #popped > 0 then
    reply[1] = 0
  elseif leased == 0 then
    -- Nothing is ready, so every wake-up token is stale: drop them before the worker blocks.
    redis.call('DEL', Q.wake)
    sweep_finished(Q, now)
    local next_due = first_score(Q.delayed)
    local next_deadline = first_score(Q.active)
    local soonest = next_due
    if next_tick and (not soonest or next_tick < soonest) then soonest = next_tick end
    if next_deadline and (not soonest or next_deadline < soonest) then soonest = next_deadline end
    if soonest then reply[1] = math.max(0, soonest - now) end
    if limit_wait and redis.call('ZCARD', Q.ready) > 0 and (reply[1] < 0 or limit_wait < reply[1]) then
      reply[1] = limit_wait
    end
  end
  if leased > 0 and next_tick and reply[1] < 0 then
    -- The worker may have slots left: it must wake for the next tick as an idle one would.
    reply[1] = math.max(0, next_tick - now)
  end
  return reply
end

redis.register_function('psq_pop', pop)
