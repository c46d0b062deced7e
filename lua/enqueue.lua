--[[ psq_enqueue: add one or many jobs to a queue in one atomic call.

KEYS[1] jobs      HASH    job id -> job record (JSON)
KEYS[2] payloads  HASH    job id -> call payload (JSON text, opaque here)
KEYS[3] ready     ZSET    job id -> priority/FIFO score
KEYS[4] delayed   ZSET    job id -> due time (ms)
KEYS[5] seq       STRING  sequence counter
KEYS[6] stats     HASH    counters
KEYS[7] wake      LIST    wake-up tokens for idle workers

ARGV[1] count             integer  number of jobs N (1..ENQUEUE_BATCH_MAX)
ARGV[2] max_payload       integer  largest payload accepted, in bytes
then, for each job i = 0..N-1, ten fields starting at ARGV[3 + 10 * i]:
  id          string   job id; an id that exists already is left as it is
  func        string   handler reference "module:qualname"
  payload     string   JSON text of {"args": [...], "kwargs": {...}}
  priority    integer  PRIORITY_MIN..PRIORITY_MAX, higher runs first
  delay_ms    integer  >= 0, run no earlier than now + delay_ms
  at_ms       integer  absolute due time (ms, server clock) or '' for none; wins over delay_ms
  timeout_s   number   > 0, hard wall-clock limit of one run
  retries     integer  >= 0, runs allowed after the first failed one
  backoff_s   number   >= 0, base of the exponential retry delay
  result_ttl  number   >= 0, seconds the result is kept after the job ends

Returns: a flat array, three entries per job: id, status, 1 when created or 0 when it existed.
Errors: BAD_ARGUMENT (nothing is written when any job of the batch is invalid).
]]

local FIELDS_PER_JOB = 10

-- A number that is neither NaN nor infinite: tonumber() accepts 'nan' and 'inf', which
-- cjson cannot encode, so one would fail the call halfway through its writes.
local function finite(n)
  return n ~= nil and n == n and n ~= math.huge and n ~= -math.huge
end

local function enqueue(KEYS, ARGV)
  local jobs_key, payloads_key, ready_key = KEYS[1], KEYS[2], KEYS[3]
  local delayed_key, seq_key, stats_key, wake_key = KEYS[4], KEYS[5], KEYS[6], KEYS[7]
  local count = tonumber(ARGV[1])
  local max_payload = tonumber(ARGV[2])

  if not count or count < 1 or count > ENQUEUE_BATCH_MAX or #ARGV ~= 2 + count * FIELDS_PER_JOB then
    return error_reply(ERR.BAD_ARGUMENT, 'batch size or argument count is wrong')
  end
  local now = now_ms()

  -- Validate the whole batch before writing anything.
  local batch = {}
  for i = 0, count - 1 do
    local base = 3 + i * FIELDS_PER_JOB
    local job = {
      id = ARGV[base],
      func = ARGV[base + 1],
      priority = tonumber(ARGV[base + 3]),
      timeout = tonumber(ARGV[base + 6]),
      retries = tonumber(ARGV[base + 7]),
      backoff = tonumber(ARGV[base + 8]),
      result_ttl = tonumber(ARGV[base + 9]),
    }
    local payload = ARGV[base + 2]
    local delay_ms = tonumber(ARGV[base + 4])
    local at_ms = tonumber(ARGV[base + 5])
    local where = 'job ' .. (i + 1) .. ' (' .. tostring(job.id) .. '): '
    if job.id == '' or job.func == '' then
      return error_reply(ERR.BAD_ARGUMENT, where .. 'id and func must not be empty')
    end
    if #payload > max_payload then
      return error_reply(ERR.BAD_ARGUMENT, where .. 'payload of ' .. #payload .. ' bytes exceeds ' .. max_payload)
    end
    if not job.priority or job.priority % 1 ~= 0 or job.priority < PRIORITY_MIN or job.priority > PRIORITY_MAX then
      return error_reply(ERR.BAD_ARGUMENT,
        where .. 'priority must be an integer in ' .. PRIORITY_MIN .. '..' .. PRIORITY_MAX)
    end
    if not finite(delay_ms) or delay_ms < 0 then
      return error_reply(ERR.BAD_ARGUMENT, where .. 'delay must not be negative')
    end
    if ARGV[base + 5] ~= '' and not finite(at_ms) then
      return error_reply(ERR.BAD_ARGUMENT, where .. 'due time must be a finite number of ms or empty')
    end
    if at_ms and at_ms < now - PAST_TOLERANCE_MS then
      return error_reply(ERR.BAD_ARGUMENT, where .. 'due time is in the past')
    end
    if not finite(job.timeout) or job.timeout <= 0 then
      return error_reply(ERR.BAD_ARGUMENT, where .. 'timeout must be positive')
    end
    if not finite(job.retries) or job.retries < 0 or not finite(job.backoff) or job.backoff < 0
        or not finite(job.result_ttl) or job.result_ttl < 0 then
      return error_reply(ERR.BAD_ARGUMENT,
        where .. 'retries, backoff and result_ttl must be finite and not negative')
    end
    local due = at_ms or (now + delay_ms)
    batch[i + 1] = { job = job, payload = payload, due = due }
  end

  local reply = {}
  local created = 0
  for _, entry in ipairs(batch) do
    local job = entry.job
    local id = job.id
    local raw = redis.call('HGET', jobs_key, id)
    if raw then
      local existing = decode_job(raw)
      reply[#reply + 1] = id
      reply[#reply + 1] = existing and existing.status or 'corrupt'
      reply[#reply + 1] = 0
    else
      job.attempts = 0
      job.lost = 0
      job.created = now
      redis.call('HSET', payloads_key, id, entry.payload)
      if entry.due > now then
        job.status = STATUS.DELAYED
        job.due = entry.due
        redis.call('HSET', jobs_key, id, cjson.encode(job))
        redis.call('ZADD', delayed_key, int(entry.due), id)
      else
        push_ready(jobs_key, ready_key, seq_key, id, job)
      end
      created = created + 1
      reply[#reply + 1] = id
      reply[#reply + 1] = job.status
      reply[#reply + 1] = 1
    end
  end
  if created > 0 then
    incr_stat(stats_key, 'enqueued', created)
    -- Delayed jobs wake a worker too, so an idle worker shortens its wait to the new due time.
    wake_workers(wake_key, created)
  end
  return reply
end

redis.register_function('psq_enqueue', enqueue)
