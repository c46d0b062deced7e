--[[ psq_enqueue: add one or many jobs to a queue in one atomic call.

KEYS[1] jobs      HASH    job id -> job record (JSON)
KEYS[2] payloads  HASH    job id -> call payload (JSON text, opaque here)
KEYS[3] ready     ZSET    job id -> priority/FIFO score
KEYS[4] delayed   ZSET    job id -> due time (ms)
KEYS[5] seq       STRING  sequence counter
KEYS[6] stats     HASH    counters
KEYS[7] wake      LIST    wake-up tokens for idle workers
KEYS[8] waiting   ZSET    job id -> time it began to wait for subtasks (ms)
KEYS[9] config    HASH    queue settings (aging)

ARGV[1] count             integer  number of jobs N (1..ENQUEUE_BATCH_MAX)
ARGV[2] max_payload       integer  largest payload accepted, in bytes
then, for each job i = 0..N-1, thirteen fields starting at ARGV[3 + 13 * i]:
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
  time_slice  number   >= 0, seconds a run may use before its next checkpoint pauses it; 0: none
  parent      string   '' or JSON {queue, id, split, index}: this job is subtask `index` of
                       split number `split` of job `id` in queue `queue`
  split       string   '' or JSON {total, groups, collect, results_arg}: the job starts waiting
                       for `total` subtasks (split number 1) created after it

Returns: a flat array, three entries per job: id, status, 1 when created or 0 when it existed.
Errors: BAD_ARGUMENT (nothing is written when any job of the batch is invalid).
]]

local FIELDS_PER_JOB = 13

-- A number that is neither NaN nor infinite: tonumber() accepts 'nan' and 'inf', which
-- cjson cannot encode, so one would fail the call halfway through its writes.
local function finite(n)
  return n ~= nil and n == n and n ~= math.huge and n ~= -math.huge
end

local function enqueue(KEYS, ARGV)
  local Q = { jobs = KEYS[1], payloads = KEYS[2], ready = KEYS[3], delayed = KEYS[4], seq = KEYS[5],
    stats = KEYS[6], wake = KEYS[7], waiting = KEYS[8], config = KEYS[9] }
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
      time_slice = tonumber(ARGV[base + 10]),
    }
    local parent_json, split_json = ARGV[base + 11], ARGV[base + 12]
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
    if not finite(job.time_slice) or job.time_slice < 0 then
      return error_reply(ERR.BAD_ARGUMENT, where .. 'time_slice must be finite and not negative')
    end
    if job.time_slice == 0 then job.time_slice = nil end
    local split
    if parent_json ~= '' then
      local ok, parent = pcall(cjson.decode, parent_json)
      if not ok or type(parent) ~= 'table' or type(parent.id) ~= 'string' or type(parent.queue) ~= 'string'
          or type(parent.index) ~= 'number' or type(parent.split) ~= 'number' then
        return error_reply(ERR.BAD_ARGUMENT, where .. 'parent must be JSON {queue, id, split, index}')
      end
      job.parent = parent
    end
    if split_json ~= '' then
      local ok
      ok, split = pcall(cjson.decode, split_json)
      if not ok or type(split) ~= 'table' or type(split.total) ~= 'number' or split.total < 1 then
        return error_reply(ERR.BAD_ARGUMENT, where .. 'split must be JSON {total >= 1, groups, collect}')
      end
    end
    local due = at_ms or (now + delay_ms)
    batch[i + 1] = { job = job, payload = payload, due = due, split = split }
  end

  local reply = {}
  local created = 0
  for _, entry in ipairs(batch) do
    local job = entry.job
    local id = job.id
    local raw = redis.call('HGET', Q.jobs, id)
    if raw then
      local existing = decode_job(raw)
      reply[#reply + 1] = id
      reply[#reply + 1] = existing and existing.status or 'corrupt'
      reply[#reply + 1] = 0
    else
      job.attempts = 0
      job.lost = 0
      job.created = now
      redis.call('HSET', Q.payloads, id, entry.payload)
      if entry.split then
        job.status = STATUS.WAITING
        job.split = 1
        job.split_total = entry.split.total
        job.split_groups = entry.split.groups
        job.collect = entry.split.collect and true or false
        job.results_arg = entry.split.results_arg and true or false
        redis.call('HSET', Q.jobs, id, cjson.encode(job))
        redis.call('ZADD', Q.waiting, int(now), id)
      elseif entry.due > now then
        job.status = STATUS.DELAYED
        job.due = entry.due
        redis.call('HSET', Q.jobs, id, cjson.encode(job))
        redis.call('ZADD', Q.delayed, int(entry.due), id)
      else
        push_ready(Q, id, job, now)
      end
      created = created + 1
      reply[#reply + 1] = id
      reply[#reply + 1] = job.status
      reply[#reply + 1] = 1
    end
  end
  if created > 0 then
    incr_stat(Q.stats, 'enqueued', created)
    -- Delayed jobs wake a worker too, so an idle worker shortens its wait to the new due time.
    wake_workers(Q.wake, created)
  end
  return reply
end

redis.register_function('psq_enqueue', enqueue)
