--[[ psq_pop: lease the next jobs of a queue to a worker.

In the same atomic call, before popping, it promotes delayed jobs that are due and reclaims
jobs whose lease expired (their worker died or stalled), each in a bounded batch, so no
separate scheduler process is needed.

KEYS[1]  jobs      HASH    job id -> job record (JSON)
KEYS[2]  payloads  HASH    job id -> call payload (JSON text)
KEYS[3]  errors    HASH    job id -> error text
KEYS[4]  ready     ZSET    job id -> priority/FIFO score
KEYS[5]  delayed   ZSET    job id -> due time (ms)
KEYS[6]  active    ZSET    job id -> lease deadline (ms)
KEYS[7]  failed    ZSET    job id -> failed time (ms)
KEYS[8]  seq       STRING  sequence counter, also the source of fencing tokens
KEYS[9]  stats     HASH    counters
KEYS[10] wake      LIST    wake-up tokens for idle workers

ARGV[1] max_jobs   integer  >= 1, most jobs to lease in this call
ARGV[2] lease_ms   integer  > 0, lease length; the worker renews before it runs out
ARGV[3] worker     string   name of the worker taking the jobs (for inspection)

Returns: { wait_ms, n, then five entries per leased job: id, token, lease_deadline_ms,
           job record (JSON), payload (JSON text) }
  wait_ms is -1 when jobs were leased or nothing is scheduled, else the milliseconds until
  the next delayed job is due or the next lease expires (0: call again now).
Errors: BAD_ARGUMENT.
]]

local function promote_due(jobs_key, errors_key, ready_key, delayed_key, failed_key, seq_key, stats_key, now)
  local due = redis.call('ZRANGEBYSCORE', delayed_key, '-inf', int(now), 'LIMIT', 0, PROMOTE_BATCH)
  if #due == 0 then return end
  redis.call('ZREM', delayed_key, unpack(due))
  for _, id in ipairs(due) do
    local job = decode_job(redis.call('HGET', jobs_key, id))
    if job then
      push_ready(jobs_key, ready_key, seq_key, id, job)
    else
      fail_corrupt(errors_key, failed_key, stats_key, id, now)
    end
  end
end

local function reclaim_expired(jobs_key, errors_key, ready_key, active_key, failed_key, seq_key, stats_key, now)
  local expired = redis.call('ZRANGEBYSCORE', active_key, '-inf', int(now), 'LIMIT', 0, RECLAIM_BATCH)
  if #expired == 0 then return end
  redis.call('ZREM', active_key, unpack(expired))
  for _, id in ipairs(expired) do
    local job = decode_job(redis.call('HGET', jobs_key, id))
    if not job then
      fail_corrupt(errors_key, failed_key, stats_key, id, now)
    else
      job.lost = (job.lost or 0) + 1
      if job.lost > MAX_LOST_LEASES then
        fail_for_good(jobs_key, errors_key, failed_key, stats_key, id, job, now,
          'lease expired ' .. job.lost .. ' times: the job keeps losing its worker')
      else
        incr_stat(stats_key, 'reclaimed')
        push_ready(jobs_key, ready_key, seq_key, id, job)
      end
    end
  end
end

local function first_score(key)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return first[2] and tonumber(first[2]) or nil
end

local function pop(KEYS, ARGV)
  local jobs_key, payloads_key, errors_key, ready_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
  local delayed_key, active_key, failed_key = KEYS[5], KEYS[6], KEYS[7]
  local seq_key, stats_key, wake_key = KEYS[8], KEYS[9], KEYS[10]
  local max_jobs = tonumber(ARGV[1])
  local lease_ms = tonumber(ARGV[2])
  local worker = ARGV[3]
  if not max_jobs or max_jobs < 1 or not lease_ms or lease_ms <= 0 then
    return error_reply(ERR.BAD_ARGUMENT, 'max_jobs and lease_ms must be positive')
  end
  local now = now_ms()

  promote_due(jobs_key, errors_key, ready_key, delayed_key, failed_key, seq_key, stats_key, now)
  reclaim_expired(jobs_key, errors_key, ready_key, active_key, failed_key, seq_key, stats_key, now)

  local reply = { -1, 0 }
  local leased = 0
  local deadline = now + lease_ms
  -- Corrupt records are failed and skipped, so fewer than popped may be leased.
  local popped = redis.call('ZPOPMIN', ready_key, max_jobs)
  for i = 1, #popped, 2 do
    local id = popped[i]
    local job = decode_job(redis.call('HGET', jobs_key, id))
    local payload = redis.call('HGET', payloads_key, id)
    if not job then
      fail_corrupt(errors_key, failed_key, stats_key, id, now)
    elseif not payload then
      fail_for_good(jobs_key, errors_key, failed_key, stats_key, id, job, now, 'job payload is missing')
    else
      local token = redis.call('INCR', seq_key)
      job.status = STATUS.ACTIVE
      job.attempts = (job.attempts or 0) + 1
      job.token = token
      job.started = now
      job.worker = worker
      local record = cjson.encode(job)
      redis.call('HSET', jobs_key, id, record)
      redis.call('ZADD', active_key, int(deadline), id)
      leased = leased + 1
      local at = #reply
      reply[at + 1] = id
      reply[at + 2] = token
      reply[at + 3] = deadline
      reply[at + 4] = record
      reply[at + 5] = payload
    end
  end
  reply[2] = leased

  if leased == 0 and #popped > 0 then
    reply[1] = 0
  elseif leased == 0 then
    -- Nothing is ready, so every wake-up token is stale: drop them before the worker blocks.
    redis.call('DEL', wake_key)
    local next_due = first_score(delayed_key)
    local next_deadline = first_score(active_key)
    local soonest = next_due
    if next_deadline and (not soonest or next_deadline < soonest) then soonest = next_deadline end
    if soonest then reply[1] = math.max(0, soonest - now) end
  end
  return reply
end

redis.register_function('psq_pop', pop)
