--[[ psq_complete_many: store the results of runs of one queue and finish those jobs.

The one way to complete jobs: a worker reports one job's result (calls.complete) or the
results of many short jobs in one call. The work done once per call (the clock, the stats
counter, the sweep of expired finished records, the freed-slot wake-ups) is done once for the
whole batch, and the jobs' reads and writes of each key are one command for the whole batch
(HMGET jobs, HSET jobs, HSET results, ZREM active, ZADD finished, ZADD notices).

KEYS[1]  jobs         HASH  job id -> job record (JSON)
KEYS[2]  payloads     HASH  job id -> call payload (JSON text)
KEYS[3]  results      HASH  job id -> result (JSON text)
KEYS[4]  errors       HASH  job id -> error text
KEYS[5]  active       ZSET  job id -> lease deadline (ms)
KEYS[6]  finished     ZSET  job id -> time its record expires (ms)
KEYS[7]  stats        HASH  counters
KEYS[8]  checkpoints  HASH  job id -> last saved checkpoint (JSON text)
KEYS[9]  notices      ZSET  subtask id -> time it ended (its parent is told)
KEYS[10] config       HASH  queue settings (a concurrency limit: freed slots wake workers;
                            max_result_bytes)
KEYS[11] wake         LIST  wake-up tokens for idle workers
KEYS[12] failed       ZSET  job id -> failed time (ms): where a job with too large a result goes
KEYS[13] metrics      HASH  wait/run time buckets, jobs ended per minute (psq_metrics)
KEYS[14] events       STREAM  job events (completed, failed, enqueued: callbacks)
KEYS[15] ready        ZSET  job id -> priority/FIFO score: where a callback job goes
KEYS[16] seq          STRING  sequence counter (callback jobs)
then one `subtasks` key per job, in the order of the jobs: KEYS[16 + i] is the queue's key
  subtasks:<id> of job i, the HASH of its own subtask outcomes (expire with the job).

ARGV[1] id      string  job id (JOB_ID_PATTERN)
ARGV[2] token   string  fencing token of the lease (TOKEN_LENGTH lowercase hex characters)
ARGV[3] result  string  JSON text of the handler's return value
then more id/token/result triples in ARGV[4], ARGV[5], ... 1..COMPLETE_BATCH_MAX triples.

Returns: one entry per job, in order: its run time in milliseconds (an integer, lease start to
  now) when it was completed, else why not, as a plain string: 'PSQ_STALE_TOKEN ...' when the
  token does not hold the lease (the result is not stored); 'PSQ_NOT_FOUND ...';
  'PSQ_TOO_LARGE ...' when the result was over the queue's max_result_bytes: the job failed for
  good with a reason naming the size and the limit. That job is skipped, the others are still
  completed. A completed job other jobs depend on (its record's `dependents`) has the pair
  { run time, its dependents as JSON [ [queue, id], ... ] } instead of the run time: the caller
  tells them next (psq_dependency_done), then forgets its notice. A job with an `on_success`
  handler enqueues it in the same call (job id "<id>.on_success", args: id, result).
Errors (nothing is changed): BAD_KEYS; BAD_ARGUMENT: not 1..COMPLETE_BATCH_MAX
  id/token/result triples, a malformed id or token, a result that is not JSON.
]]

-- The reason a result over the queue's limit fails its job, or nil when it is within it.
local function result_too_large(result, limit)
  if #result <= limit then return nil end
  return 'result of ' .. #result .. ' bytes exceeds the limit of ' .. limit .. ' bytes (max_result_bytes)'
end

-- Fail a leased job whose result is too large; returns the reply entry and its new record.
local function fail_oversized_result(Q, id, job, reason, now)
  redis.call('ZREM', Q.active, id)
  job.failure = KIND.REFUSED
  -- The worker only hears PayloadTooLarge: the job's parent or dependents wait for a re-drive.
  Q.untold = true
  fail_for_good(Q, id, job, now, reason)
  Q.untold = nil
  return ERR.TOO_LARGE .. ' job ' .. id .. ' failed for good: ' .. reason, cjson.encode(job)
end

local function complete_many(KEYS, ARGV)
  local Q = { jobs = KEYS[1], payloads = KEYS[2], results = KEYS[3], errors = KEYS[4],
    active = KEYS[5], finished = KEYS[6], stats = KEYS[7], checkpoints = KEYS[8],
    notices = KEYS[9], config = KEYS[10], wake = KEYS[11], failed = KEYS[12],
    metrics = KEYS[13], events = KEYS[14], ready = KEYS[15], seq = KEYS[16] }
  local fixed_keys = 16
  local count = #ARGV / 3
  if #ARGV % 3 ~= 0 or count < 1 or count > COMPLETE_BATCH_MAX then
    return bad_argument('pass 1..' .. COMPLETE_BATCH_MAX .. ' id/token/result triples')
  end
  local ids = {}
  for n = 1, count do
    local refusal = check_id_token(ARGV[3 * n - 2], ARGV[3 * n - 1], 'triple ' .. n .. ': ')
    if refusal then return refusal end
    ids[n] = ARGV[3 * n - 2]
  end
  local refused = check_keys(KEYS, 'psq_complete_many', ids)
  if refused then return refused end
  local limit = size_limit(Q.config, 'max_result_bytes')
  local too_large = {}
  for n = 1, count do
    local result = ARGV[3 * n]
    too_large[n] = result_too_large(result, limit)
    if not too_large[n] and not is_json(result) then
      return bad_argument('job ' .. ids[n] .. ': result must be JSON text')
    end
  end

  local now = now_ms()
  local stored = hmget_many(Q.jobs, ids)
  -- Each job's record as this call left it, so a job given twice is completed once (the
  -- second time its token no longer holds the lease).
  local records = {}
  for n = 1, count do records[ids[n]] = stored[n] end
  local writes = new_writes()
  local replies = {}
  local completed, freed = 0, 0
  Q.tally = new_tally()
  for n = 1, count do
    local at = 3 * n - 2
    local id, token, result = ARGV[at], ARGV[at + 1], ARGV[at + 2]
    local job, code, message = check_lease(records[id], id, token)
    if job and too_large[n] then
      replies[n], records[id] = fail_oversized_result(Q, id, job, too_large[n], now)
      freed = freed + 1
    elseif job then
      replies[n], records[id] = complete_leased(Q, KEYS[fixed_keys + n], id, job, result, now, writes)
      observe(Q.tally, 'run', replies[n])
      if type(job.dependents) == 'table' then replies[n] = { replies[n], cjson.encode(job.dependents) } end
      note_event(Q.tally, 'completed', id)
      completed = completed + 1
    else
      replies[n] = code .. ' ' .. message
    end
  end
  flush_writes(writes)
  if completed > 0 then
    incr_stat(Q.stats, 'completed', completed)
    -- At least as many as this call added to `finished`, so the sweep keeps up with the batches.
    sweep_finished(Q, now, math.max(SWEEP_BATCH, completed))
  end
  slot_freed(Q, completed + freed)
  Q.tally.completed = completed
  record_tally(Q, now)
  return replies
end

redis.register_function('psq_complete_many', complete_many)
