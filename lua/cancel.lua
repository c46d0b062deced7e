--[[ psq_cancel: cancel jobs that have not ended, many in one call.

A queued or delayed job is removed from its set; a waiting job (split into subtasks) stops
waiting. An active job loses its lease: the worker's next renewal is refused and it stops the
run; its late result is refused too. The caller cancels a waiting job's subtasks next (they
may live in other queues), using the split groups in its record.

KEYS[1] jobs      HASH  job id -> job record (JSON)
KEYS[2] ready     ZSET  job id -> priority/FIFO score
KEYS[3] delayed   ZSET  job id -> due time (ms)
KEYS[4] active    ZSET  job id -> lease deadline (ms)
KEYS[5] waiting   ZSET  job id -> time it began to wait (ms)
KEYS[6] finished  ZSET  job id -> time its record expires (ms)
KEYS[7] stats     HASH  counters
KEYS[8] notices   ZSET  subtask id -> time it ended (its parent is told)
KEYS[9] events    STREAM  job events (cancelled)
KEYS[9 + i] subtasks  HASH  subtask outcomes of the i-th job (expire with it): the queue's key
                           subtasks:<id>

ARGV[1] cascade  string  '1' when the jobs are cancelled because their parent was: their
                         parent is not told; '0' a cancelled subtask is noted for its parent,
                         which treats it as a failed subtask. A job others depend on (its
                         record's `dependents`) is noted either way: the caller tells them
                         (psq_dependency_done), else the re-drive does
ARGV[2] id       string  the first job id (JOB_ID_PATTERN); ARGV[1 + i] the i-th, one per KEYS
                         beyond the ninth, 1..CANCEL_BATCH_MAX ids

Returns: two entries per job: the status it had when cancelled, 'missing' when there is no
  such job, or 'ended:<status>' when it had already ended (nothing changed for it); then its
  record (JSON, after the change) or false.
Errors (nothing is changed): BAD_KEYS; BAD_ARGUMENT.
]]

local FIXED_KEYS = 9

local function cancel(KEYS, ARGV)
  local Q = { jobs = KEYS[1], finished = KEYS[6], stats = KEYS[7], notices = KEYS[8],
    events = KEYS[9], tally = new_tally() }
  local set_of = { [STATUS.QUEUED] = KEYS[2], [STATUS.DELAYED] = KEYS[3], [STATUS.ACTIVE] = KEYS[4],
    [STATUS.WAITING] = KEYS[5] }
  if (ARGV[1] ~= '0' and ARGV[1] ~= '1') or #ARGV < 2 or #ARGV - 1 > CANCEL_BATCH_MAX then
    return bad_argument("pass cascade ('0' or '1') and 1.." .. CANCEL_BATCH_MAX .. ' job ids')
  end
  local ids = {}
  for i = 2, #ARGV do
    if not is_job_id(ARGV[i]) then return bad_argument('job id ' .. (i - 1) .. ' is malformed') end
    ids[i - 1] = ARGV[i]
  end
  local refused = check_keys(KEYS, 'psq_cancel', ids)
  if refused then return refused end
  local cascade = ARGV[1] == '1'
  local now = now_ms()
  local reply = {}
  for i = 2, #ARGV do
    local id = ARGV[i]
    local raw = redis.call('HGET', Q.jobs, id)
    local job = decode_job(raw)
    if not job then
      reply[#reply + 1] = 'missing'
      reply[#reply + 1] = false
    elseif not set_of[job.status] then
      reply[#reply + 1] = 'ended:' .. job.status
      reply[#reply + 1] = raw
    else
      reply[#reply + 1] = job.status
      redis.call('ZREM', set_of[job.status], id)
      job.status = STATUS.CANCELLED
      job.ended = now
      local record = cjson.encode(job)
      redis.call('HSET', Q.jobs, id, record)
      keep_finished(Q.finished, KEYS[FIXED_KEYS + i - 1], id, job, now)
      incr_stat(Q.stats, 'cancelled')
      note_event(Q.tally, 'cancelled', id)
      -- A job others depend on is noted even in a cascade: they must learn it was cancelled.
      if not cascade or type(job.dependents) == 'table' then note_subtask_end(Q, id, job, now) end
      reply[#reply + 1] = record
    end
  end
  record_tally(Q, now)
  return reply
end

redis.register_function('psq_cancel', cancel)
