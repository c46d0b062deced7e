--[[ psq_subtask_done: record, in the parent's queue, that one subtask ended.

Idempotent: an outcome is recorded once per (split, index), so a subtask that ran twice, or a
notice delivered twice after a crash, counts once. The last subtask to end queues the parent
again (its next run sees every outcome, in subtask order); a subtask that failed for good fails
the parent unless the parent collects failures.

KEYS[1] jobs      HASH    job id -> job record (JSON), in the parent's queue
KEYS[2] ready     ZSET    job id -> priority/FIFO score
KEYS[3] waiting   ZSET    job id -> time it began to wait (ms)
KEYS[4] failed    ZSET    job id -> failed time (ms)
KEYS[5] errors    HASH    job id -> error text
KEYS[6] seq       STRING  sequence counter
KEYS[7] stats     HASH    counters
KEYS[8] wake      LIST    wake-up tokens for idle workers
KEYS[9] notices   ZSET    subtask id -> time it ended (for the parent's own parent)
KEYS[10] config   HASH    queue settings (aging, max_error_bytes)
KEYS[11] events   STREAM  job events (failed: the parent)
KEYS[12] payloads HASH    job id -> call payload: the parent's on_failure callback's
KEYS[13] subtasks HASH    the parent's subtask outcomes: the queue's key subtasks:<parent>

ARGV[1] parent   string   parent job id (JOB_ID_PATTERN)
ARGV[2] split    integer  1..SPLIT_TOTAL_MAX, split number the subtask belongs to
ARGV[3] index    integer  1..SPLIT_TOTAL_MAX, the subtask's position in the split
ARGV[4] ok       string   '1' completed, '0' failed for good
ARGV[5] value    string   the result (JSON text) or the error text (cut to the parent queue's
                          max_error_bytes)

Returns: one of 'duplicate' (already recorded), 'recorded' (also, with nothing written, when
  the parent is complete, cancelled or gone), 'resumed' (the parent was queued
  again), 'parent_failed' (the parent failed because of this subtask; cancel its other
  subtasks next).
Errors (nothing is changed): BAD_KEYS (also a key holding the wrong type or content);
  BAD_ARGUMENT.
]]

local function subtask_done(KEYS, ARGV)
  local Q = { jobs = KEYS[1], ready = KEYS[2], waiting = KEYS[3], failed = KEYS[4], errors = KEYS[5],
    seq = KEYS[6], stats = KEYS[7], wake = KEYS[8], notices = KEYS[9], config = KEYS[10],
    events = KEYS[11], payloads = KEYS[12], subtasks = KEYS[13] }
  if #ARGV ~= 5 then return bad_argument('pass parent, split, index, ok and value') end
  local parent_id = ARGV[1]
  if not is_job_id(parent_id) then return bad_argument('parent must be a well-formed job id') end
  local refused = check_keys(KEYS, 'psq_subtask_done', { parent_id })
  if refused then return refused end
  local number, index = as_int(ARGV[2], 1, SPLIT_TOTAL_MAX), as_int(ARGV[3], 1, SPLIT_TOTAL_MAX)
  if not number or not index then
    return bad_argument('split and index must be integers in 1..' .. SPLIT_TOTAL_MAX)
  end
  if ARGV[4] ~= '0' and ARGV[4] ~= '1' then return bad_argument("ok must be '0' or '1'") end
  local ok, value = ARGV[4] == '1', ARGV[5]
  local outcome
  if ok then
    -- Spliced into the outcome as it is, so it must be JSON.
    if not is_json(value) then return bad_argument('a subtask result must be JSON text') end
    outcome = '{"ok":true,"result":' .. value .. '}'
  else
    value = clip_text(value, size_limit(Q.config, 'max_error_bytes'))
    outcome = cjson.encode({ ok = false, error = value })
  end
  local done_before = redis.call('HGET', Q.subtasks, number .. ':done')
  if done_before and not as_int(done_before, 0, 2 ^ 53) then
    return error_reply(ERR.BAD_KEYS, Q.subtasks .. ' holds a count that is not an integer')
  end
  local parent = decode_job(redis.call('HGET', Q.jobs, parent_id))
  if not parent or parent.status == STATUS.COMPLETE or parent.status == STATUS.CANCELLED then
    -- Nothing to record for a parent that ended: its outcomes hash expires with it, and a
    -- write now would create it again without that expiry.
    return 'recorded'
  end
  if redis.call('HSETNX', Q.subtasks, number .. ':' .. index, outcome) == 0 then
    return 'duplicate'
  end
  local done = redis.call('HINCRBY', Q.subtasks, number .. ':done', 1)
  local reason
  if not ok then
    -- The last line names the subtask, since a failure is summed up by its last line.
    local last_line = last_line_of(value)
    reason = value .. '\nSubtaskFailed: subtask ' .. index .. ' of split ' .. number .. ' failed: '
      .. last_line
    redis.call('HSETNX', Q.subtasks, number .. ':failed', reason)
  end

  if parent.status ~= STATUS.WAITING or parent.split ~= number then
    return 'recorded'  -- not waiting yet (psq_split will look), or failed
  end
  local now = now_ms()
  if reason and not parent.collect then
    redis.call('ZREM', Q.waiting, parent_id)
    Q.tally = new_tally()
    fail_for_good(Q, parent_id, parent, now, reason)
    record_tally(Q, now)
    return 'parent_failed'
  end
  if done >= (parent.split_total or 1) then
    redis.call('ZREM', Q.waiting, parent_id)
    push_ready(Q, parent_id, parent, now)
    wake_workers(Q.wake, 1)
    return 'resumed'
  end
  return 'recorded'
end

redis.register_function('psq_subtask_done', subtask_done)
