--[[ psq_complete: store the result of a run and finish the job.

KEYS[1] jobs      HASH  job id -> job record (JSON)
KEYS[2] payloads  HASH  job id -> call payload (JSON text)
KEYS[3] results   HASH  job id -> result (JSON text)
KEYS[4] errors    HASH  job id -> error text
KEYS[5] active    ZSET  job id -> lease deadline (ms)
KEYS[6] finished  ZSET  job id -> time its record expires (ms)
KEYS[7] stats     HASH  counters

ARGV[1] id        string   job id
ARGV[2] token     integer  fencing token of the lease
ARGV[3] result    string   JSON text of the handler's return value

Returns: the job's run time in milliseconds (from lease start to now).
Errors: NOT_FOUND; STALE_TOKEN when the lease was lost (the result is not stored).
]]

local function complete(KEYS, ARGV)
  local jobs_key, payloads_key, results_key, errors_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
  local active_key, finished_key, stats_key = KEYS[5], KEYS[6], KEYS[7]
  local id, token, result = ARGV[1], ARGV[2], ARGV[3]

  local job, code, message = job_under_lease(jobs_key, id, token)
  if not job then return error_reply(code, message) end
  local now = now_ms()
  job.status = STATUS.COMPLETE
  job.ended = now
  redis.call('HSET', jobs_key, id, cjson.encode(job))
  redis.call('HSET', results_key, id, result)
  redis.call('ZREM', active_key, id)
  keep_finished(finished_key, id, job, now)
  incr_stat(stats_key, 'completed')
  sweep_finished(finished_key, jobs_key, payloads_key, results_key, errors_key, now)
  return now - (job.started or now)
end

redis.register_function('psq_complete', complete)
