--[[ psq_split: a running job has created its subtasks; make it wait for them.

The worker first enqueues the subtasks (ids derived from the parent id and split number, so a
re-run after a crash re-creates the same ids and enqueueing them is a no-op), then calls this.
Subtasks that ended before this call were already recorded by psq_subtask_done, so if all of
them have ended the parent is queued again at once.

KEYS[1] jobs         HASH    job id -> job record (JSON)
KEYS[2] checkpoints  HASH    job id -> last saved checkpoint (JSON text)
KEYS[3] ready        ZSET    job id -> priority/FIFO score
KEYS[4] active       ZSET    job id -> lease deadline (ms)
KEYS[5] waiting      ZSET    job id -> time it began to wait (ms)
KEYS[6] failed       ZSET    job id -> failed time (ms)
KEYS[7] errors       HASH    job id -> error text
KEYS[8] seq          STRING  sequence counter
KEYS[9] stats        HASH    counters
KEYS[10] wake        LIST    wake-up tokens for idle workers
KEYS[11] notices     ZSET    subtask id -> time it ended (for this job's own parent)
KEYS[12] config      HASH    queue settings (aging, max_checkpoint_bytes)
KEYS[13] events      STREAM  job events (failed)
KEYS[14] payloads    HASH    job id -> call payload: an on_failure callback's
KEYS[15] subtasks    HASH    this job's subtask outcomes: "<split>:<index>", "<split>:done",
                             "<split>:failed"; the queue's key subtasks:<id>

ARGV[1] id          string   job id (JOB_ID_PATTERN)
ARGV[2] token       string   fencing token of the lease (TOKEN_LENGTH lowercase hex characters)
ARGV[3] split       integer  split number: the record's split + 1
ARGV[4] total       integer  1..SPLIT_TOTAL_MAX, number of subtasks created
ARGV[5] groups      string   JSON [ [queue, count], ... ]: subtasks in order, by queue; the counts
                             (integers >= 1) add up to `total`
ARGV[6] collect     string   '1': a subtask that fails is collected as an error outcome;
                             '0': it fails this job
ARGV[7] checkpoint  string   JSON text to save with the split (at most max_checkpoint_bytes),
                             or '' to keep the last one

Returns: the job's new status: waiting, queued (all subtasks had ended) or failed.
Errors (nothing is changed): BAD_KEYS; BAD_ARGUMENT (also a wrong split number or total);
  TOO_LARGE (the checkpoint); NOT_FOUND; STALE_TOKEN.
]]

local function split(KEYS, ARGV)
  local Q = { jobs = KEYS[1], checkpoints = KEYS[2], ready = KEYS[3], active = KEYS[4], waiting = KEYS[5],
    failed = KEYS[6], errors = KEYS[7], seq = KEYS[8], stats = KEYS[9], wake = KEYS[10],
    notices = KEYS[11], config = KEYS[12], events = KEYS[13], payloads = KEYS[14], subtasks = KEYS[15] }
  if #ARGV ~= 7 then
    return bad_argument('pass id, token, split, total, groups, collect and checkpoint')
  end
  local id, token, saved = ARGV[1], ARGV[2], ARGV[7]
  local refusal = check_id_token(id, token)
  if refusal then return refusal end
  local refused = check_keys(KEYS, 'psq_split', { id })
  if refused then return refused end
  local number, total = as_int(ARGV[3], 1, SPLIT_TOTAL_MAX), as_int(ARGV[4], 1, SPLIT_TOTAL_MAX)
  if not number or not total then
    return bad_argument('split must be an integer >= 1 and total in 1..' .. SPLIT_TOTAL_MAX)
  end
  local decoded, raw_groups = pcall(cjson.decode, ARGV[5])
  local groups, counted = nil, 0
  if decoded then groups, counted = parse_groups(raw_groups) end
  if not groups or counted ~= total then
    return bad_argument('groups must be JSON [[queue, count], ...] with counts adding up to total')
  end
  if ARGV[6] ~= '0' and ARGV[6] ~= '1' then return bad_argument("collect must be '0' or '1'") end
  if saved ~= '' then
    refusal = check_checkpoint(Q.config, id, saved)
    if refusal then return refusal end
  end
  local job, code, message = job_under_lease(Q.jobs, id, token)
  if not job then return error_reply(code, message) end
  if number ~= (job.split or 0) + 1 then
    return bad_argument('split number must be ' .. ((job.split or 0) + 1))
  end
  local now = now_ms()
  redis.call('ZREM', Q.active, id)
  slot_freed(Q)
  if saved ~= '' then redis.call('HSET', Q.checkpoints, id, saved) end
  job.split = number
  job.split_total = total
  job.split_groups = groups
  job.collect = ARGV[6] == '1'
  job.results_arg = false
  -- Waiting for subtasks is not a failed attempt.
  undo_attempt(job)

  local failure = redis.call('HGET', Q.subtasks, number .. ':failed')
  if failure and not job.collect then
    Q.tally = new_tally()
    fail_for_good(Q, id, job, now, failure)
    record_tally(Q, now)
    return STATUS.FAILED
  end
  local done = tonumber(redis.call('HGET', Q.subtasks, number .. ':done')) or 0
  if done >= total then
    push_ready(Q, id, job, now)
    wake_workers(Q.wake, 1)
    return STATUS.QUEUED
  end
  job.status = STATUS.WAITING
  redis.call('HSET', Q.jobs, id, cjson.encode(job))
  redis.call('ZADD', Q.waiting, int(now), id)
  return STATUS.WAITING
end

redis.register_function('psq_split', split)
