--[[ psq_subtask_done: record, in the parent's queue, that one subtask ended.

Idempotent: an outcome is recorded once per (split, index), so a subtask that ran twice, or a
notice delivered twice after a crash, counts once. The last subtask to end queues the parent
again (its next run sees every outcome, in subtask order); a subtask that failed for good fails
the parent unless the parent collects failures.

KEYS[1] jobs      HASH    job id -> job record (JSON), in the parent's queue
KEYS[2] subtasks  HASH    the parent's subtask outcomes
KEYS[3] ready     ZSET    job id -> priority/FIFO score
KEYS[4] waiting   ZSET    job id -> time it began to wait (ms)
KEYS[5] failed    ZSET    job id -> failed time (ms)
KEYS[6] errors    HASH    job id -> error text
KEYS[7] seq       STRING  sequence counter
KEYS[8] stats     HASH    counters
KEYS[9] wake      LIST    wake-up tokens for idle workers
KEYS[10] notices  ZSET    subtask id -> time it ended (for the parent's own parent)
KEYS[11] config   HASH    queue settings (aging)

ARGV[1] parent   string   parent job id
ARGV[2] split    integer  split number the subtask belongs to
ARGV[3] index    integer  the subtask's position in the split (1-based)
ARGV[4] ok       string   '1' completed, '0' failed for good
ARGV[5] value    string   the result (JSON text) or the error text

Returns: one of 'duplicate' (already recorded), 'recorded' (also, with nothing written, when
  the parent is complete, cancelled or gone), 'resumed' (the parent was queued
  again), 'parent_failed' (the parent failed because of this subtask; cancel its other
  subtasks next).
]]

local function subtask_done(KEYS, ARGV)
  local Q = { jobs = KEYS[1], subtasks = KEYS[2], ready = KEYS[3], waiting = KEYS[4], failed = KEYS[5],
    errors = KEYS[6], seq = KEYS[7], stats = KEYS[8], wake = KEYS[9], notices = KEYS[10], config = KEYS[11] }
  local parent_id, number, index, ok, value = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == '1', ARGV[5]
  local outcome
  if ok then
    outcome = '{"ok":true,"result":' .. value .. '}'
  else
    outcome = cjson.encode({ ok = false, error = value })
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
    local last_line = value:match('([^\n]*)%s*$') or value
    reason = value .. '\nSubtaskFailed: subtask ' .. index .. ' of split ' .. number .. ' failed: '
      .. last_line
    redis.call('HSETNX', Q.subtasks, number .. ':failed', reason)
  end

  if parent.status ~= STATUS.WAITING or tostring(parent.split) ~= number then
    return 'recorded'  -- not waiting yet (psq_split will look), or failed
  end
  local now = now_ms()
  if reason and not parent.collect then
    redis.call('ZREM', Q.waiting, parent_id)
    fail_for_good(Q, parent_id, parent, now, reason)
    return 'parent_failed'
  end
  if done >= parent.split_total then
    redis.call('ZREM', Q.waiting, parent_id)
    push_ready(Q, parent_id, parent, now)
    wake_workers(Q.wake, 1)
    return 'resumed'
  end
  return 'recorded'
end

redis.register_function('psq_subtask_done', subtask_done)
