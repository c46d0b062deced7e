--[[ psq_cancel: cancel a job that has not finished.

A queued or delayed job is removed from its set. An active job loses its lease: the worker's
next renewal is refused and it stops the run; its late result is refused too.

KEYS[1] jobs      HASH  job id -> job record (JSON)
KEYS[2] ready     ZSET  job id -> priority/FIFO score
KEYS[3] delayed   ZSET  job id -> due time (ms)
KEYS[4] active    ZSET  job id -> lease deadline (ms)
KEYS[5] finished  ZSET  job id -> time its record expires (ms)
KEYS[6] stats     HASH  counters

ARGV[1] id  string  job id

Returns: the status the job had before it was cancelled.
Errors: NOT_FOUND; BAD_STATE when the job already ended (complete, failed or cancelled).
]]

local function cancel(KEYS, ARGV)
  local jobs_key, ready_key, delayed_key, active_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
  local finished_key, stats_key = KEYS[5], KEYS[6]
  local id = ARGV[1]

  local job = decode_job(redis.call('HGET', jobs_key, id))
  if not job then return error_reply(ERR.NOT_FOUND, 'job ' .. id .. ' does not exist') end
  local was = job.status
  local set_of = { [STATUS.QUEUED] = ready_key, [STATUS.DELAYED] = delayed_key, [STATUS.ACTIVE] = active_key }
  if not set_of[was] then
    return error_reply(ERR.BAD_STATE, 'job ' .. id .. ' is ' .. tostring(was) .. ' and cannot be cancelled')
  end
  local now = now_ms()
  redis.call('ZREM', set_of[was], id)
  job.status = STATUS.CANCELLED
  job.ended = now
  redis.call('HSET', jobs_key, id, cjson.encode(job))
  keep_finished(finished_key, id, job, now)
  incr_stat(stats_key, 'cancelled')
  return was
end

redis.register_function('psq_cancel', cancel)
