--[[ psq_enqueue: add one or many jobs to a queue in one atomic call.

KEYS[1] jobs      HASH    job id -> job record (JSON)
KEYS[2] payloads  HASH    job id -> call payload (JSON text, opaque here)
KEYS[3] ready     ZSET    job id -> priority/FIFO score
KEYS[4] delayed   ZSET    job id -> due time (ms)
KEYS[5] seq       STRING  sequence counter
KEYS[6] stats     HASH    counters
KEYS[7] wake      LIST    wake-up tokens for idle workers
KEYS[8] waiting   ZSET    job id -> time it began to wait for subtasks (ms)
KEYS[9] config    HASH    queue settings (aging, max_payload_bytes)
KEYS[10] events   STREAM  job events (enqueued)

ARGV[1] count  integer  number of jobs N (1..ENQUEUE_BATCH_MAX)
then, for each job i = 0..N-1, thirteen fields starting at ARGV[2 + 13 * i]:
  id          string   job id (JOB_ID_PATTERN); an id that exists already is left as it is
  func        string   handler reference "module:qualname", 1..FUNC_MAX_BYTES bytes
  payload     string   JSON text of {"args": [...], "kwargs": {...}}, at most the queue's
                       max_payload_bytes (config hash; default SIZE_LIMIT_DEFAULTS)
  priority    integer  PRIORITY_MIN..PRIORITY_MAX, higher runs first
  delay_ms    integer  0..DELAY_MS_MAX, run no earlier than now + delay_ms
  at_ms       integer  absolute due time (ms, server clock, at most DELAY_MS_MAX ahead and at
                       most PAST_TOLERANCE_MS behind) or '' for none; wins over delay_ms
  timeout_s   number   > 0 .. TIME_S_MAX, hard wall-clock limit of one run
  retries     integer  0..RETRIES_MAX, runs allowed after the first failed one
  backoff_s   number   0..TIME_S_MAX, base of the exponential retry delay
  result_ttl  number   0..TIME_S_MAX, seconds the result is kept after the job ends
  time_slice  number   0..TIME_S_MAX, seconds a run may use before its next checkpoint pauses
                       it; 0: none
  parent      string   '' or JSON {queue, id, split, index}: this job is subtask `index`
                       (integer >= 1) of split number `split` (integer >= 1) of job `id` in
                       queue `queue`
  split       string   '' or JSON {total, groups, collect, results_arg}: the job starts waiting
                       for `total` (1..SPLIT_TOTAL_MAX) subtasks (split number 1) created after
                       it, `groups` [ [queue, count], ... ] with counts adding up to `total`

Returns: a flat array, three entries per job: id, status, 1 when created or 0 when it existed.
Errors (nothing is written when any job of the batch is invalid): BAD_KEYS; BAD_ARGUMENT;
  TOO_LARGE (a payload over the queue's max_payload_bytes).
]]

local FIELDS_PER_JOB = 13

-- The parent reference, rebuilt from its known fields only, or nil when it is malformed.
local function parse_parent(text)
  local ok, parent = pcall(cjson.decode, text)
  if not ok or type(parent) ~= 'table' or not is_queue_name(parent.queue) or not is_job_id(parent.id)
      or type(parent.split) ~= 'number' or type(parent.index) ~= 'number' then
    return nil
  end
  local split, index = as_int(int(parent.split), 1, SPLIT_TOTAL_MAX), as_int(int(parent.index), 1, SPLIT_TOTAL_MAX)
  if not all_finite(parent.split, 0) or not all_finite(parent.index, 0) or split ~= parent.split
      or index ~= parent.index then
    return nil
  end
  return { queue = parent.queue, id = parent.id, split = split, index = index }
end

-- Split groups [[queue, count], ...] rebuilt from the decoded JSON, and their total count, or
-- nil when malformed.
local function parse_groups(groups)
  if type(groups) ~= 'table' then return nil end
  local clean, total = {}, 0
  for n = 1, #groups do
    local group = groups[n]
    if type(group) ~= 'table' or not is_queue_name(group[1]) or type(group[2]) ~= 'number'
        or not all_finite(group[2], 0) or group[2] % 1 ~= 0 or group[2] < 1 then
      return nil
    end
    total = total + group[2]
    if total > SPLIT_TOTAL_MAX then return nil end
    clean[n] = { group[1], group[2] }
  end
  -- Any other key (a sparse or non-array table) would not survive the rebuild: refuse it.
  local entries = 0
  for _ in pairs(groups) do entries = entries + 1 end
  if entries ~= #groups then return nil end
  return clean, total
end

-- The split plan rebuilt from its known fields, or nil when malformed.
local function parse_split(text)
  local ok, plan = pcall(cjson.decode, text)
  if not ok or type(plan) ~= 'table' or type(plan.total) ~= 'number' or not all_finite(plan.total, 0)
      or plan.total % 1 ~= 0 or plan.total < 1 or plan.total > SPLIT_TOTAL_MAX then
    return nil
  end
  local groups, total = parse_groups(plan.groups or {})
  if not groups or (#groups > 0 and total ~= plan.total) then return nil end
  for _, flag in ipairs({ 'collect', 'results_arg' }) do
    if plan[flag] ~= nil and type(plan[flag]) ~= 'boolean' then return nil end
  end
  return { total = plan.total, groups = groups, collect = plan.collect == true,
    results_arg = plan.results_arg == true }
end

local function enqueue(KEYS, ARGV)
  local Q = { jobs = KEYS[1], payloads = KEYS[2], ready = KEYS[3], delayed = KEYS[4], seq = KEYS[5],
    stats = KEYS[6], wake = KEYS[7], waiting = KEYS[8], config = KEYS[9],
    events = KEYS[10], tally = new_tally() }
  local refused = check_keys(KEYS, 'psq_enqueue')
  if refused then return refused end
  local count = as_int(ARGV[1], 1, ENQUEUE_BATCH_MAX)
  if not count or #ARGV ~= 1 + count * FIELDS_PER_JOB then
    return bad_argument('pass a count of 1..' .. ENQUEUE_BATCH_MAX .. ' and ' .. FIELDS_PER_JOB
      .. ' fields per job: ' .. #ARGV .. ' arguments for a count of ' .. tostring(ARGV[1]))
  end
  local max_payload = size_limit(Q.config, 'max_payload_bytes')
  local now = now_ms()

  -- Validate the whole batch before writing anything.
  local batch = {}
  for i = 0, count - 1 do
    local base = 2 + i * FIELDS_PER_JOB
    local id, func, payload = ARGV[base], ARGV[base + 1], ARGV[base + 2]
    local job = {
      id = id,
      func = func,
      priority = as_int(ARGV[base + 3], PRIORITY_MIN, PRIORITY_MAX),
      timeout = as_number(ARGV[base + 6], 0, TIME_S_MAX),
      retries = as_int(ARGV[base + 7], 0, RETRIES_MAX),
      backoff = as_number(ARGV[base + 8], 0, TIME_S_MAX),
      result_ttl = as_number(ARGV[base + 9], 0, TIME_S_MAX),
      time_slice = as_number(ARGV[base + 10], 0, TIME_S_MAX),
    }
    local parent_json, split_json = ARGV[base + 11], ARGV[base + 12]
    local delay_ms = as_int(ARGV[base + 4], 0, DELAY_MS_MAX)
    local at_ms
    local where = 'job ' .. (i + 1) .. ': '
    if not is_job_id(id) then
      return bad_argument(where .. 'id must be 1..' .. JOB_ID_MAX .. ' letters, digits and _.:- starting'
        .. ' with a letter or digit')
    end
    where = 'job ' .. (i + 1) .. ' (' .. id .. '): '
    if #func < 1 or #func > FUNC_MAX_BYTES then
      return bad_argument(where .. 'func must be 1..' .. FUNC_MAX_BYTES .. ' bytes')
    end
    if #payload > max_payload then
      return error_reply(ERR.TOO_LARGE, where .. 'payload of ' .. #payload .. ' bytes exceeds the limit of '
        .. max_payload .. ' bytes (max_payload_bytes)')
    end
    if not is_json(payload) then
      return bad_argument(where .. 'payload must be JSON text')
    end
    if not job.priority then
      return bad_argument(where .. 'priority must be an integer in ' .. PRIORITY_MIN .. '..' .. PRIORITY_MAX)
    end
    if not delay_ms then
      return bad_argument(where .. 'delay_ms must be an integer in 0..' .. DELAY_MS_MAX)
    end
    if ARGV[base + 5] ~= '' then
      at_ms = as_int(ARGV[base + 5], 0, now + DELAY_MS_MAX)
      if not at_ms then
        return bad_argument(where .. 'due time must be an integer ms timestamp at most ' .. DELAY_MS_MAX
          .. ' ms ahead, or empty')
      end
      if at_ms < now - PAST_TOLERANCE_MS then
        return bad_argument(where .. 'due time is in the past')
      end
    end
    if not job.timeout or job.timeout <= 0 then
      return bad_argument(where .. 'timeout must be a number of seconds in (0, ' .. TIME_S_MAX .. ']')
    end
    if not job.retries then
      return bad_argument(where .. 'retries must be an integer in 0..' .. RETRIES_MAX)
    end
    if not job.backoff or not job.result_ttl or not job.time_slice then
      return bad_argument(where .. 'backoff, result_ttl and time_slice must be numbers of seconds in 0..'
        .. TIME_S_MAX)
    end
    if job.time_slice == 0 then job.time_slice = nil end
    local split
    if parent_json ~= '' then
      job.parent = parse_parent(parent_json)
      if not job.parent then
        return bad_argument(where .. 'parent must be JSON {queue, id, split >= 1, index >= 1}')
      end
    end
    if split_json ~= '' then
      split = parse_split(split_json)
      if not split then
        return bad_argument(where .. 'split must be JSON {total: 1..' .. SPLIT_TOTAL_MAX
          .. ', groups: [[queue, count], ...] adding up to total, collect, results_arg}')
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
      note_event(Q.tally, 'enqueued', id)
      reply[#reply + 1] = id
      reply[#reply + 1] = job.status
      reply[#reply + 1] = 1
    end
  end
  if created > 0 then
    incr_stat(Q.stats, 'enqueued', created)
    -- Delayed jobs wake a worker too, so an idle worker shortens its wait to the new due time.
    wake_workers(Q.wake, created)
    record_tally(Q, now)
  end
  return reply
end

redis.register_function('psq_enqueue', enqueue)
