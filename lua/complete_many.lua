--[[ psq_complete_many: store the results of many runs of one queue and finish those jobs.

A worker that ran many short jobs reports their results in one call: each job is completed as
psq_complete would, while the work done once per call (the clock, the stats counter, the sweep
of expired finished records, the freed-slot wake-ups) is done once for the whole batch, and the
jobs' reads and writes of each key are one command for the whole batch (HMGET jobs, HSET jobs,
HSET results, ZREM active, ZADD finished, ZADD notices).

KEYS[1]  jobs         HASH  job id -> job record (JSON)
KEYS[2]  payloads     HASH  job id -> call payload (JSON text)
KEYS[3]  results      HASH  job id -> result (JSON text)
KEYS[4]  errors       HASH  job id -> error text
KEYS[5]  active       ZSET  job id -> lease deadline (ms)
KEYS[6]  finished     ZSET  job id -> time its record expires (ms)
KEYS[7]  stats        HASH  counters
KEYS[8]  checkpoints  HASH  job id -> last saved checkpoint (JSON text)
KEYS[9]  notices      ZSET  subtask id -> time it ended (its parent is told)
KEYS[10] config       HASH  queue settings (a concurrency limit: freed slots wake workers)
KEYS[11] wake         LIST  wake-up tokens for idle workers
then one `subtasks` key per job, in the order of the jobs: KEYS[11 + i] is the HASH of job i's
  own subtask outcomes (expire with the job).

ARGV[1] id        string   job id
ARGV[2] token     integer  fencing token of the lease
ARGV[3] result    string   JSON text of the handler's return value
then more id/token/result triples in ARGV[4], ARGV[5], ... at most COMPLETE_BATCH_MAX triples.

Returns: one entry per job, in order: its run time in milliseconds (an integer, lease start to
  now) when it was completed, else the text psq_complete would have raised, as a plain string
  ('PSQ_STALE_TOKEN ...' when the token does not hold the lease, the result is not stored;
  'PSQ_NOT_FOUND ...'): that job is skipped, the others are still completed.
Errors: BAD_ARGUMENT (nothing is changed): not id/token/result triples, a subtasks key count
  that differs from the number of triples, a token that is not an integer, or more than
  COMPLETE_BATCH_MAX triples.
]]

local function complete_many(KEYS, ARGV)
  local Q = { jobs = KEYS[1], payloads = KEYS[2], results = KEYS[3], errors = KEYS[4],
    active = KEYS[5], finished = KEYS[6], stats = KEYS[7], checkpoints = KEYS[8],
    notices = KEYS[9], config = KEYS[10], wake = KEYS[11] }
  local fixed_keys = 11
  if #ARGV % 3 ~= 0 then return error_reply(ERR.BAD_ARGUMENT, 'pass id/token/result triples') end
  local count = #ARGV / 3
  if count > COMPLETE_BATCH_MAX then
    return error_reply(ERR.BAD_ARGUMENT,
      'at most ' .. COMPLETE_BATCH_MAX .. ' id/token/result triples per call')
  end
  if #KEYS ~= fixed_keys + count then
    return error_reply(ERR.BAD_ARGUMENT, 'pass ' .. fixed_keys .. ' keys and one subtasks key per job: '
      .. count .. ' jobs, ' .. #KEYS .. ' keys')
  end
  for i = 2, #ARGV, 3 do
    if not string.match(ARGV[i], '^%d+$') then
      return error_reply(ERR.BAD_ARGUMENT, 'token must be a non-negative integer, got ' .. ARGV[i])
    end
  end

  local now = now_ms()
  local ids = {}
  for n = 1, count do ids[n] = ARGV[3 * n - 2] end
  local stored = hmget_many(Q.jobs, ids)
  -- Each job's record as this call left it, so a job given twice is completed once (the
  -- second time its token no longer holds the lease).
  local records = {}
  for n = 1, count do records[ids[n]] = stored[n] end
  local writes = new_writes()
  local replies = {}
  local completed = 0
  for n = 1, count do
    local at = 3 * n - 2
    local id, token, result = ARGV[at], ARGV[at + 1], ARGV[at + 2]
    local job, code, message = check_lease(records[id], id, token)
    if job then
      replies[n], records[id] = complete_leased(Q, KEYS[fixed_keys + n], id, job, result, now, writes)
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
    slot_freed(Q, completed)
  end
  return replies
end

redis.register_function('psq_complete_many', complete_many)
