--[[ psq_complete: store the result of a run and finish the job.

KEYS[1]  jobs         HASH  job id -> job record (JSON)
KEYS[2]  payloads     HASH  job id -> call payload (JSON text)
KEYS[3]  results      HASH  job id -> result (JSON text)
KEYS[4]  errors       HASH  job id -> error text
KEYS[5]  active       ZSET  job id -> lease deadline (ms)
KEYS[6]  finished     ZSET  job id -> time its record expires (ms)
KEYS[7]  stats        HASH  counters
KEYS[8]  checkpoints  HASH  job id -> last saved checkpoint (JSON text)
KEYS[9]  notices      ZSET  subtask id -> time it ended (its parent is told)
KEYS[10] config       HASH  queue settings (a concurrency limit: a freed slot wakes a worker;
                            max_result_bytes)
KEYS[11] wake         LIST  wake-up tokens for idle workers
KEYS[12] failed       ZSET  job id -> failed time (ms): where a job with too large a result goes
KEYS[13] subtasks     HASH  this job's own subtask outcomes (expire with the job): the queue's
                            key subtasks:<id>

ARGV[1] id      string  job id (JOB_ID_PATTERN)
ARGV[2] token   string  fencing token of the lease (TOKEN_LENGTH lowercase hex characters)
ARGV[3] result  string  JSON text of the handler's return value

Returns: the job's run time in milliseconds (from lease start to now); or, when the result is
  over the queue's max_result_bytes, the job is failed for good with a reason naming the size
  and the limit, and the reply is that reason as a plain string starting 'PSQ_TOO_LARGE '.
Errors (nothing is changed): BAD_KEYS; BAD_ARGUMENT (a malformed id or token, a result that is
  not JSON); NOT_FOUND; STALE_TOKEN when the lease was lost (the result is not stored).
]]

-- The reason a result over the queue's limit fails its job, or nil when it is within it
-- (shared with psq_complete_many).
local function result_too_large(result, limit)
  if #result <= limit then return nil end
  return 'result of ' .. #result .. ' bytes exceeds the limit of ' .. limit .. ' bytes (max_result_bytes)'
end

-- Fail a leased job whose result is too large; returns the reply entry and its new record.
local function fail_oversized_result(Q, id, job, reason, now)
  redis.call('ZREM', Q.active, id)
  job.failure = KIND.REFUSED
  fail_for_good(Q, id, job, now, reason)
  return ERR.TOO_LARGE .. ' job ' .. id .. ' failed for good: ' .. reason, cjson.encode(job)
end

local function complete(KEYS, ARGV)
  local Q = { jobs = KEYS[1], payloads = KEYS[2], results = KEYS[3], errors = KEYS[4],
    active = KEYS[5], finished = KEYS[6], stats = KEYS[7], checkpoints = KEYS[8],
    notices = KEYS[9], config = KEYS[10], wake = KEYS[11], failed = KEYS[12] }
  if #ARGV ~= 3 then return bad_argument('pass id, token and result') end
  local id, token, result = ARGV[1], ARGV[2], ARGV[3]
  if not is_job_id(id) or not is_token(token) then
    return bad_argument('not a job id and a token of ' .. TOKEN_LENGTH .. ' lowercase hex characters')
  end
  local refused = check_keys(KEYS, 'psq_complete', { id })
  if refused then return refused end
  local too_large = result_too_large(result, size_limit(Q.config, 'max_result_bytes'))
  if not too_large and not is_json(result) then
    return bad_argument('job ' .. id .. ': result must be JSON text')
  end

  local job, code, message = job_under_lease(Q.jobs, id, token)
  if not job then return error_reply(code, message) end
  local now = now_ms()
  if too_large then
    local reply = fail_oversized_result(Q, id, job, too_large, now)
    slot_freed(Q)
    return reply
  end
  local run_ms = complete_leased(Q, KEYS[13], id, job, result, now)
  incr_stat(Q.stats, 'completed')
  sweep_finished(Q, now)
  slot_freed(Q)
  return run_ms
end

redis.register_function('psq_complete', complete)
