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
KEYS[11] unique   ZSET    dedup key -> time its window closes (ms); only touched by jobs with
                          unique_for (swept then, SWEEP_BATCH at a time)
KEYS[12] unique_ids HASH  dedup key -> the id of the job enqueued with it

ARGV[1] count  integer  number of jobs N (1..ENQUEUE_BATCH_MAX)
then, for each job i = 0..N-1, fourteen fields starting at ARGV[2 + 14 * i]:
  id          string   job id (JOB_ID_PATTERN); an id that exists already is left as it is
  func        string   handler reference "module:qualname", 1..FUNC_MAX_BYTES bytes
  payload     string   JSON text of {"args": [...], "kwargs": {...}}, at most the queue's
                       max_payload_bytes (config hash; default SIZE_LIMIT_DEFAULTS); ''
                       for a call without arguments (nothing stored: EMPTY_PAYLOAD)
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
  extra       string   '' or a JSON object of rarely used options, each optional, any other
                       field refused:
                         expires     integer ms timestamp (server clock), after the due time
                                     and at most DELAY_MS_MAX ahead: not started by then, the
                                     job is never run (psq_pop ends it as expired)
                         unique_for  integer 1..DELAY_MS_MAX ms: another enqueue with the same
                                     dedup key within that window returns this job
                         unique_key  string 1..UNIQUE_KEY_MAX_BYTES bytes, the dedup key
                                     (default: the job id); only with unique_for
                         on_success  handler reference (as func): enqueued in this queue when
                                     the job completes, called with (job id, result)
                         on_failure  handler reference: enqueued when it fails for good,
                                     called with (job id, error text)
                         retry_on    [name, ...] 1..RETRY_ON_MAX exception names
                                     "module.QualName" (letters, digits, _ and ., at most
                                     EXCEPTION_NAME_MAX_BYTES bytes): the worker retries only
                                     those (and their subclasses)
                         depends_on  [ [queue, id], ... ] 1..DEPENDS_MAX jobs (not itself) this
                                     job waits for (status waiting; not with split or a due
                                     time); the caller registers it with each of them next
                                     (psq_add_dependent)
                         on_dependency_failure  'cancel' (default) or 'run': what a dependency
                                     that fails, is cancelled or expires does to this job

A record leaves out what has its default (RECORD_DEFAULTS, by copy_unless_default; queued_at =
created; decode_job fills them in); one with a stored payload says "payload": true.

Returns: a flat array, three entries per job: id, status, 1 when created or 0 when it existed.
  A job whose dedup key is held by a job within its window is not created: its entry names
  that job (its id, its status or 'ended' when its record is gone, 0).
Errors (nothing is written when any job of the batch is invalid): BAD_KEYS; BAD_ARGUMENT;
  TOO_LARGE (a payload over the queue's max_payload_bytes).
]]

local FIELDS_PER_JOB = 14

local EXTRA_FIELDS = { expires = true, unique_for = true, unique_key = true, on_success = true,
  on_failure = true, retry_on = true, depends_on = true, on_dependency_failure = true }

-- An integer of a decoded JSON value in lo..hi, else nil.
local function json_int(value, lo, hi)
  if type(value) ~= 'number' or not all_finite(value, 0) or value % 1 ~= 0 or value < lo or value > hi then
    return nil
  end
  return value
end

local function is_exception_name(value)
  return type(value) == 'string' and #value >= 1 and #value <= EXCEPTION_NAME_MAX_BYTES
    and value:find('^[%w_][%w_.]*$') ~= nil
end

-- A list of `check`ed values, 1..max of them, with no other keys; else nil.
local function json_list(value, max, check)
  if type(value) ~= 'table' or #value < 1 or #value > max then return nil end
  local entries = 0
  for _ in pairs(value) do entries = entries + 1 end
  if entries ~= #value then return nil end
  for n = 1, #value do
    if not check(value[n]) then return nil end
  end
  return value
end

local function is_job_ref(value)
  return type(value) == 'table' and #value == 2 and is_queue_name(value[1]) and is_job_id(value[2])
end

-- Set the rarely used options of `extra` (JSON text, see the header) on `job`; returns nil,
-- or the reason they are malformed. `queue`, `id`: the job's own, `due`: its due time (ms).
local function apply_extra(job, text, queue, id, due, now)
  local ok, extra = pcall(cjson.decode, text)
  if not ok or type(extra) ~= 'table' then return 'extra must be a JSON object' end
  for field in pairs(extra) do
    if not EXTRA_FIELDS[field] then return 'extra has an unknown option ' .. tostring(field) end
  end
  if extra.expires ~= nil then
    job.expires = json_int(extra.expires, 0, now + DELAY_MS_MAX)
    if not job.expires or job.expires <= math.max(now, due) then
      return 'expires must be an integer ms time after now and after the due time'
    end
  end
  if extra.unique_for ~= nil then
    local window = json_int(extra.unique_for, 1, DELAY_MS_MAX)
    if not window then return 'unique_for must be an integer of 1..' .. DELAY_MS_MAX .. ' ms' end
    local key = extra.unique_key
    if key == nil then key = id end
    if type(key) ~= 'string' or #key < 1 or #key > UNIQUE_KEY_MAX_BYTES then
      return 'unique_key must be a string of 1..' .. UNIQUE_KEY_MAX_BYTES .. ' bytes'
    end
    job.unique = { key = key, until_ms = now + window }
  elseif extra.unique_key ~= nil then
    return 'unique_key needs unique_for'
  end
  for _, which in ipairs({ 'on_success', 'on_failure' }) do
    local func = extra[which]
    if func ~= nil and (type(func) ~= 'string' or #func < 1 or #func > FUNC_MAX_BYTES) then
      return which .. ' must be a handler reference of 1..' .. FUNC_MAX_BYTES .. ' bytes'
    end
    job[which] = func
  end
  if extra.retry_on ~= nil then
    job.retry_on = json_list(extra.retry_on, RETRY_ON_MAX, is_exception_name)
    if not job.retry_on then
      return 'retry_on must list 1..' .. RETRY_ON_MAX .. ' exception names "module.QualName"'
    end
  end
  if extra.depends_on ~= nil then
    local refs = json_list(extra.depends_on, DEPENDS_MAX, is_job_ref)
    if not refs then return 'depends_on must list 1..' .. DEPENDS_MAX .. ' [queue, id] pairs' end
    local deps, seen = {}, {}
    for _, ref in ipairs(refs) do
      local name = ref[1] .. '\0' .. ref[2]
      if ref[1] == queue and ref[2] == id then return 'a job cannot depend on itself' end
      if not seen[name] then
        seen[name] = true
        deps[#deps + 1] = { ref[1], ref[2], 0 }
      end
    end
    if job.split or due > now then return 'depends_on cannot be combined with a split or a due time' end
    job.deps, job.deps_left = deps, #deps
  end
  local rule = extra.on_dependency_failure
  if rule ~= nil and rule ~= 'run' and rule ~= 'cancel' then
    return "on_dependency_failure must be 'run' or 'cancel'"
  end
  if rule == 'run' then job.dep_run = true end
  return nil
end

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

-- How a refusal names job `i` (from 0) of the batch: made only when refusing.
local function job_ref(i, id)
  return 'job ' .. (i + 1) .. ' (' .. id .. '): '
end

-- A read of `key` that also checks its type (`kind`): a key of another type is refused
-- (the reply, an error) rather than failing the call later, halfway through its writes.
local function probe(key, kind, command, ...)
  local reply = redis.pcall(command, key, ...)
  if type(reply) == 'table' and reply.err then
    return nil, wrong_type(key, kind) or error_reply(ERR.BAD_KEYS, key .. ': ' .. reply.err)
  end
  return reply
end

-- The record as stored: fields at their default are left out (decode_job fills them in), and
-- the id is the hash field, so a queued job costs a few dozen bytes.
local function compact_record(job)
  local record = { func = job.func, created = job.created, due = job.due, parent = job.parent,
    time_slice = job.time_slice, expires = job.expires, on_success = job.on_success, on_failure = job.on_failure,
    retry_on = job.retry_on, deps = job.deps, deps_left = job.deps_left, dep_run = job.dep_run }
  copy_unless_default(job, record)
  if job.payload then record.payload = true end
  if job.split then
    record.split, record.split_total, record.split_groups = 1, job.split.total, job.split.groups
    record.collect, record.results_arg = job.split.collect, job.split.results_arg
  end
  return cjson.encode(record)
end

-- Up to `count` wake-up tokens, never more than WAKE_TOKENS_MAX in the list (`held` now).
local function wake_up_to(wake_key, count, held)
  local room = math.min(count, WAKE_TOKENS_MAX - held)
  if room <= 0 then return end
  local args = {}
  for i = 1, room do args[i] = '1' end
  redis.call('LPUSH', wake_key, unpack(args))
end

local function enqueue(KEYS, ARGV)
  local Q = { jobs = KEYS[1], payloads = KEYS[2], ready = KEYS[3], delayed = KEYS[4], seq = KEYS[5],
    stats = KEYS[6], wake = KEYS[7], waiting = KEYS[8], config = KEYS[9],
    events = KEYS[10], unique = KEYS[11], unique_ids = KEYS[12],
    tally = { events = {} } }  -- only events: enqueue observes no times
  -- Names here; each key's type is checked by the first command that touches it, before
  -- any write, and only for the keys this call writes.
  local refused = check_keys(KEYS, 'psq_enqueue', nil, true)
  if refused then return refused end
  local count = as_int(ARGV[1], 1, ENQUEUE_BATCH_MAX)
  if not count or #ARGV ~= 1 + count * FIELDS_PER_JOB then
    return bad_argument('pass a count of 1..' .. ENQUEUE_BATCH_MAX .. ' and ' .. FIELDS_PER_JOB
      .. ' fields per job: ' .. #ARGV .. ' arguments for a count of ' .. tostring(ARGV[1]))
  end
  local settings, wrong = probe(Q.config, 'hash', 'HMGET', 'max_payload_bytes', 'aging', 'aging_base')
  if wrong then return wrong end
  local max_payload = size_limit_of(settings[1], 'max_payload_bytes')
  local now = now_ms()
  local queue = string.match(KEYS[1], QUEUE_OF_KEY)

  -- Validate the whole batch before writing anything.
  local batch, ids = {}, {}
  for i = 0, count - 1 do
    local base = 2 + i * FIELDS_PER_JOB
    local id, func, payload = ARGV[base], ARGV[base + 1], ARGV[base + 2]
    local job = {
      func = func,
      priority = as_int(ARGV[base + 3], PRIORITY_MIN, PRIORITY_MAX),
      timeout = as_number(ARGV[base + 6], 0, TIME_S_MAX),
      retries = as_int(ARGV[base + 7], 0, RETRIES_MAX),
      backoff = as_number(ARGV[base + 8], 0, TIME_S_MAX),
      result_ttl = as_number(ARGV[base + 9], 0, TIME_S_MAX),
      time_slice = as_number(ARGV[base + 10], 0, TIME_S_MAX),
      created = now,
    }
    local parent_json, split_json = ARGV[base + 11], ARGV[base + 12]
    local delay_ms = as_int(ARGV[base + 4], 0, DELAY_MS_MAX)
    local at_ms
    if not is_job_id(id) then
      return bad_argument('job ' .. (i + 1) .. ': id must be 1..' .. JOB_ID_MAX .. ' letters, digits'
        .. ' and _.:- starting with a letter or digit')
    end
    if #func < 1 or #func > FUNC_MAX_BYTES then
      return bad_argument(job_ref(i, id) .. 'func must be 1..' .. FUNC_MAX_BYTES .. ' bytes')
    end
    if #payload > max_payload then
      return error_reply(ERR.TOO_LARGE, job_ref(i, id) .. 'payload of ' .. #payload .. ' bytes exceeds the limit of '
        .. max_payload .. ' bytes (max_payload_bytes)')
    end
    if payload ~= '' and not is_json(payload) then
      return bad_argument(job_ref(i, id) .. 'payload must be JSON text')
    end
    if not job.priority then
      return bad_argument(job_ref(i, id) .. 'priority must be an integer in ' .. PRIORITY_MIN .. '..' .. PRIORITY_MAX)
    end
    if not delay_ms then
      return bad_argument(job_ref(i, id) .. 'delay_ms must be an integer in 0..' .. DELAY_MS_MAX)
    end
    if ARGV[base + 5] ~= '' then
      at_ms = as_int(ARGV[base + 5], 0, now + DELAY_MS_MAX)
      if not at_ms then
        return bad_argument(job_ref(i, id) .. 'due time must be an integer ms timestamp at most ' .. DELAY_MS_MAX
          .. ' ms ahead, or empty')
      end
      if at_ms < now - PAST_TOLERANCE_MS then
        return bad_argument(job_ref(i, id) .. 'due time is in the past')
      end
    end
    if not job.timeout or job.timeout <= 0 then
      return bad_argument(job_ref(i, id) .. 'timeout must be a number of seconds in (0, ' .. TIME_S_MAX .. ']')
    end
    if not job.retries then
      return bad_argument(job_ref(i, id) .. 'retries must be an integer in 0..' .. RETRIES_MAX)
    end
    if not job.backoff or not job.result_ttl or not job.time_slice then
      return bad_argument(job_ref(i, id) .. 'backoff, result_ttl and time_slice must be numbers of seconds in 0..'
        .. TIME_S_MAX)
    end
    if job.time_slice == 0 then job.time_slice = nil end
    if parent_json ~= '' then
      job.parent = parse_parent(parent_json)
      if not job.parent then
        return bad_argument(job_ref(i, id) .. 'parent must be JSON {queue, id, split >= 1, index >= 1}')
      end
    end
    if split_json ~= '' then
      job.split = parse_split(split_json)
      if not job.split then
        return bad_argument(job_ref(i, id) .. 'split must be JSON {total: 1..' .. SPLIT_TOTAL_MAX
          .. ', groups: [[queue, count], ...] adding up to total, collect, results_arg}')
      end
    end
    if payload ~= '' then job.payload = payload end
    local due = at_ms or (now + delay_ms)
    local extra = ARGV[base + 13]
    if extra ~= '' then
      local wrong_extra = apply_extra(job, extra, queue, id, due, now)
      if wrong_extra then return bad_argument(job_ref(i, id) .. wrong_extra) end
    end
    if job.split or job.deps then
      job.status = STATUS.WAITING
    elseif due > now then
      job.status, job.due = STATUS.DELAYED, due
    else
      job.status = STATUS.QUEUED
    end
    batch[i + 1] = job
    ids[i + 1] = id
  end

  -- Which jobs exist already (an id twice in the batch: the first one counts).
  local stored, wrong_jobs = probe(Q.jobs, 'hash', 'HMGET', unpack(ids))
  if wrong_jobs then return wrong_jobs end
  local reply, first_of = {}, {}
  local records, payloads, ready, delayed, waiting = {}, {}, {}, {}, {}
  local created = 0
  -- Dedup keys: the job holding each one this batch looked at (false: none).
  local holders, windows = {}, {}
  for n, job in ipairs(batch) do
    local id = ids[n]
    local status
    local holder
    if job.unique and not stored[n] and not first_of[id] then
      local key = job.unique.key
      if holders[key] == nil then
        local until_ms, held_id
        until_ms, wrong = probe(Q.unique, 'zset', 'ZSCORE', key)
        if wrong then return wrong end
        holders[key] = false
        if until_ms and tonumber(until_ms) > now then
          held_id, wrong = probe(Q.unique_ids, 'hash', 'HGET', key)
          if wrong then return wrong end
          if is_job_id(held_id) then holders[key] = held_id end
        end
      end
      holder = holders[key]
    end
    if holder then
      id = holder
      local existing = first_of[holder] or decode_job(redis.call('HGET', Q.jobs, holder))
      status = existing and existing.status or 'ended'
      stored[n] = true
    elseif stored[n] then
      local existing = decode_job(stored[n])
      status = existing and existing.status or 'corrupt'
    elseif first_of[id] then
      status = first_of[id].status
      stored[n] = true
    else
      first_of[id] = job
      status = job.status
      created = created + 1
      records[#records + 1] = id
      records[#records + 1] = compact_record(job)
      if job.payload then
        payloads[#payloads + 1] = id
        payloads[#payloads + 1] = job.payload
      end
      if job.split or job.deps then
        waiting[#waiting + 1] = int(now)
        waiting[#waiting + 1] = id
      elseif job.due then
        delayed[#delayed + 1] = int(job.due)
        delayed[#delayed + 1] = id
      else
        ready[#ready + 1] = job
        ready[#ready + 1] = id
      end
      note_event(Q.tally, 'enqueued', id)
      if job.unique then
        holders[job.unique.key] = id
        windows[#windows + 1] = int(job.unique.until_ms)
        windows[#windows + 1] = job.unique.key
      end
    end
    reply[#reply + 1] = id
    reply[#reply + 1] = status
    reply[#reply + 1] = stored[n] and 0 or 1
  end
  if created == 0 then return reply end

  -- The types of the keys written below, checked before the first write.
  local sequence, held
  if #ready > 0 then
    sequence, wrong = probe(Q.seq, 'string', 'GET')
    if wrong then return wrong end
    if sequence and not as_int(sequence, 0, 2 ^ 53) then
      return error_reply(ERR.BAD_KEYS, Q.seq .. ' does not hold a sequence number')
    end
  end
  held, wrong = probe(Q.wake, 'list', 'LLEN')
  if wrong then return wrong end
  refused = (#payloads > 0 and wrong_type(Q.payloads, 'hash'))
    or (#ready > 0 and wrong_type(Q.ready, 'zset'))
    or (#delayed > 0 and wrong_type(Q.delayed, 'zset'))
    or (#waiting > 0 and wrong_type(Q.waiting, 'zset'))
    or (#windows > 0 and (wrong_type(Q.unique, 'zset') or wrong_type(Q.unique_ids, 'hash')))
    or wrong_type(Q.events, 'stream')
  if refused then return refused end
  -- The first write: when the counter is not an integer it fails and nothing is written.
  local counted = redis.pcall('HINCRBY', Q.stats, 'enqueued', created)
  if type(counted) == 'table' and counted.err then
    return wrong_type(Q.stats, 'hash')
      or error_reply(ERR.BAD_KEYS, Q.stats .. ' holds a counter that is not an integer')
  end

  call_chunked('HSET', Q.jobs, records)
  call_chunked('HSET', Q.payloads, payloads)
  call_chunked('ZADD', Q.delayed, delayed)
  call_chunked('ZADD', Q.waiting, waiting)
  if #windows > 0 then
    -- Windows that closed go first (a bounded batch), so the dedup keys do not pile up.
    local closed = redis.call('ZRANGEBYSCORE', Q.unique, '-inf', int(now), 'LIMIT', 0, SWEEP_BATCH)
    if #closed > 0 then
      redis.call('ZREM', Q.unique, unpack(closed))
      redis.call('HDEL', Q.unique_ids, unpack(closed))
    end
    local named = {}
    for n = 1, #windows, 2 do
      named[n], named[n + 1] = windows[n + 1], holders[windows[n + 1]]
    end
    call_chunked('ZADD', Q.unique, windows)
    call_chunked('HSET', Q.unique_ids, named)
  end
  if #ready > 0 then
    local last = redis.call('INCRBY', Q.seq, #ready / 2)
    local aging = aging_of(settings[2], settings[3])
    local scored = {}
    for n = 1, #ready, 2 do
      local seq = last - #ready / 2 + (n + 1) / 2
      scored[n] = int(ready_score(ready[n].priority, seq, aging, now))
      scored[n + 1] = ready[n + 1]
    end
    call_chunked('ZADD', Q.ready, scored)
  end
  -- Delayed jobs wake a worker too, so an idle worker shortens its wait to the new due time.
  wake_up_to(Q.wake, created, held)
  record_events(Q.events, Q.tally)
  return reply
end

redis.register_function('psq_enqueue', enqueue)
