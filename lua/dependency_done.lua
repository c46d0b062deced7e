--[[ psq_dependency_done: record, in a dependent's queue, that one of its dependencies ended.

Idempotent: each dependency of the job is marked once in its record (`deps`: [queue, id,
0 | 1]), so a notice delivered twice after a crash counts once. When the last dependency has
completed the job is queued. A dependency that did not complete (failed for good, cancelled,
expired or missing) cancels the job, with a reason naming it in `errors`, unless the job runs
anyway (on_dependency_failure 'run', record field `dep_run`): then it counts as done. A job
that is not waiting for it (already cancelled, say) is left as it is.

KEYS[1]  jobs      HASH    job id -> job record (JSON), in the dependent's queue
KEYS[2]  ready     ZSET    job id -> priority/FIFO score
KEYS[3]  waiting   ZSET    job id -> time it began to wait (ms)
KEYS[4]  finished  ZSET    job id -> time its record expires (ms)
KEYS[5]  errors    HASH    job id -> error text (a cancelled job's reason)
KEYS[6]  seq       STRING  sequence counter
KEYS[7]  stats     HASH    counters
KEYS[8]  wake      LIST    wake-up tokens for idle workers
KEYS[9]  notices   ZSET    job id -> time it ended (a cancelled job's own parent and dependents)
KEYS[10] config    HASH    queue settings (aging)
KEYS[11] events    STREAM  job events (cancelled)

ARGV[1] id      string  the dependent's job id (JOB_ID_PATTERN)
ARGV[2] queue   string  the dependency's queue (QUEUE_NAME_PATTERN)
ARGV[3] dep     string  the dependency's job id
ARGV[4] ok      string  '1' it completed, '0' it did not
ARGV[5] status  string  the dependency's status ('missing' when it was not found), 1..64 bytes,
                        named in the reason

Returns: 'duplicate' (already recorded), 'recorded', 'released' (the job was queued),
  'cancelled' (the job was cancelled: tell its own parent and dependents next), or 'ignored'
  (no such job waiting for that dependency).
Errors (nothing is changed): BAD_KEYS; BAD_ARGUMENT.
]]

local function dependency_done(KEYS, ARGV)
  local Q = { jobs = KEYS[1], ready = KEYS[2], waiting = KEYS[3], finished = KEYS[4], errors = KEYS[5],
    seq = KEYS[6], stats = KEYS[7], wake = KEYS[8], notices = KEYS[9], config = KEYS[10],
    events = KEYS[11] }
  local refused = check_keys(KEYS, 'psq_dependency_done')
  if refused then return refused end
  if #ARGV ~= 5 then return bad_argument('pass id, queue, dep, ok and status') end
  local id, queue, dep, status = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
  if not is_job_id(id) or not is_job_id(dep) then
    return bad_argument('id and dep must be well-formed job ids')
  end
  if not is_queue_name(queue) then return bad_argument('queue must be a well-formed queue name') end
  if ARGV[4] ~= '0' and ARGV[4] ~= '1' then return bad_argument("ok must be '0' or '1'") end
  if #status < 1 or #status > 64 or not status:find('^[%w_]+$') then
    return bad_argument('status must be 1..64 letters, digits or _')
  end
  local job = decode_job(redis.call('HGET', Q.jobs, id))
  if not job or type(job.deps) ~= 'table' then return 'ignored' end
  local entry
  for _, ref in ipairs(job.deps) do
    if type(ref) == 'table' and ref[1] == queue and ref[2] == dep then entry = ref end
  end
  if not entry then return 'ignored' end
  if entry[3] == 1 then return 'duplicate' end
  if job.status ~= STATUS.WAITING then return 'ignored' end
  entry[3] = 1
  local now = now_ms()
  if ARGV[4] == '0' and not job.dep_run then
    redis.call('ZREM', Q.waiting, id)
    job.status = STATUS.CANCELLED
    job.ended = now
    redis.call('HSET', Q.jobs, id, cjson.encode(job))
    redis.call('HSET', Q.errors, id, 'DependencyFailed: dependency ' .. queue .. ':' .. dep .. ' ' .. status)
    keep_finished(Q.finished, nil, id, job, now)
    incr_stat(Q.stats, 'cancelled')
    Q.tally = new_tally()
    note_event(Q.tally, 'cancelled', id)
    note_subtask_end(Q, id, job, now)
    record_tally(Q, now)
    return 'cancelled'
  end
  job.deps_left = (job.deps_left or 1) - 1
  if job.deps_left > 0 then
    redis.call('HSET', Q.jobs, id, cjson.encode(job))
    return 'recorded'
  end
  redis.call('ZREM', Q.waiting, id)
  push_ready(Q, id, job, now)
  wake_workers(Q.wake, 1)
  return 'released'
end

redis.register_function('psq_dependency_done', dependency_done)
