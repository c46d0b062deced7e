--[[ psq_start_run: ask to start the handler of a leased job under the queue's rate limit.

psq_pop admits at most `rate` leases per `period_ms` and notes each one's token in `starts`
with the lease time. A handler may start later than its lease (a child that imports the
handler's module first), so the lease times alone would let the late starts of one window
and the on-time starts of the next fall within one period. The worker calls this right
before the handler runs, for every job leased under a rate limit (its record has `rated`):
the token's entry moves to the start time, and only when fewer than `rate` other entries lie
within the period before it. Every start that went ahead counted all the earlier starts of
its window, so no window of `period_ms` holds more than `rate` handler starts; and since
psq_pop counts the same entries, it leases the next jobs when the window opens again.

KEYS[1] jobs        HASH  job id -> job record (JSON)
KEYS[2] active      ZSET  job id -> lease deadline (ms)
KEYS[3] starts      ZSET  token -> lease or start time (ms) of the jobs leased within the period
KEYS[4] config      HASH  queue settings: rate, period_ms
KEYS[5] stats       HASH  counters (a start under the rate limit counts as started)
KEYS[6] metrics     HASH  wait/run time buckets (its wait: queued or due, to start)
KEYS[7] events      STREAM  job events (started)

ARGV[1] id     string  job id (JOB_ID_PATTERN)
ARGV[2] token  string  fencing token of the lease (TOKEN_LENGTH lowercase hex characters)

Returns: 0 when the handler may start now (its start time goes to `starts` and to the record's
  `started`, and the run is counted as started; nothing is written when the queue has no rate
  limit: psq_pop counted it), else the milliseconds until
  the window lets one more start (at least 1; nothing is changed): call again then.
Errors (nothing is changed): BAD_KEYS; BAD_ARGUMENT; NOT_FOUND; STALE_TOKEN: the token does
  not hold the lease, or the lease's deadline has passed (the job may be reclaimed any moment).
]]

local function start_run(KEYS, ARGV)
  local jobs_key, active_key, starts_key, config_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
  local refused = check_keys(KEYS, 'psq_start_run')
  if refused then return refused end
  if #ARGV ~= 2 then
    return bad_argument('pass id and token, got ' .. #ARGV .. ' arguments')
  end
  local id, token = ARGV[1], ARGV[2]
  local refusal = check_id_token(id, token)
  if refusal then return refusal end
  local job, code, message = job_under_lease(jobs_key, id, token)
  if not job then return error_reply(code, message) end
  local now = now_ms()
  local deadline = tonumber(redis.call('ZSCORE', active_key, id))
  if not deadline or deadline <= now then
    return error_reply(ERR.STALE_TOKEN, 'job ' .. id .. ': the lease of token ' .. token .. ' has expired')
  end

  local settings = redis.call('HMGET', config_key, 'rate', 'period_ms')
  local rate, period = setting_count(settings[1]), setting_count(settings[2])
  if not (rate and period) then return 0 end
  -- Entries later than now (the server clock stepped back) count too: never fewer than due.
  local since = '(' .. int(now - period)
  local others = redis.call('ZCOUNT', starts_key, since, '+inf')
  local own = tonumber(redis.call('ZSCORE', starts_key, token))
  if own and own > now - period then others = others - 1 end
  if others < rate then
    redis.call('ZADD', starts_key, int(now), token)
    -- The run starts now, not at its lease: its run time and `started` say so.
    job.started = now
    redis.call('HSET', jobs_key, id, cjson.encode(job))
    incr_stat(KEYS[5], 'started')
    local Q = { metrics = KEYS[6], events = KEYS[7], tally = new_tally() }
    observe(Q.tally, 'wait', now - (job.queued_at or now))
    note_event(Q.tally, 'started', id)
    record_tally(Q, now)
    return 0
  end
  -- The window is full (the rate was lowered, or this job's lease left the window before it
  -- got here): its lease's entry stays as it was, so psq_pop's count still holds it.
  -- One more may start once the oldest entry other than this job's own leaves the window.
  local oldest = redis.call('ZRANGEBYSCORE', starts_key, since, '+inf', 'WITHSCORES', 'LIMIT', 0, 2)
  local first = oldest[1] == token and tonumber(oldest[4]) or tonumber(oldest[2])
  return math.max(1, first + period - now)
end

redis.register_function('psq_start_run', start_run)
