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
KEYS[10] subtasks     HASH  this job's own subtask outcomes (expire with the job)
KEYS[11] config       HASH  queue settings (a concurrency limit: a freed slot wakes a worker)
KEYS[12] wake         LIST  wake-up tokens for idle workers

ARGV[1] id        string   job id
ARGV[2] token     integer  fencing token of the lease
ARGV[3] result    string   JSON text of the handler's return value

Returns: the job's run time in milliseconds (from lease start to now).
Errors: NOT_FOUND; STALE_TOKEN when the lease was lost (the result is not stored).
]]

local function complete(KEYS, ARGV)
  local Q = { jobs = KEYS[1], payloads = KEYS[2], results = KEYS[3], errors = KEYS[4],
    active = KEYS[5], finished = KEYS[6], stats = KEYS[7], checkpoints = KEYS[8],
    notices = KEYS[9], subtasks = KEYS[10], config = KEYS[11], wake = KEYS[12] }
  local id, token, result = ARGV[1], ARGV[2], ARGV[3]

  local job, code, message = job_under_lease(Q.jobs, id, token)
  if not job then return error_reply(code, message) end
  local now = now_ms()
  local run_ms = complete_leased(Q, Q.subtasks, id, job, result, now)
  incr_stat(Q.stats, 'completed')
  sweep_finished(Q, now)
  slot_freed(Q)
  return run_ms
end

redis.register_function('psq_complete', complete)
