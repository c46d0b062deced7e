--[[ psq_purge: delete jobs that have ended (failed, complete, cancelled or expired), in bounded
batches.

KEYS[1] jobs         HASH  job id -> job record (JSON)
KEYS[2] payloads     HASH  job id -> call payload
KEYS[3] results      HASH  job id -> result
KEYS[4] errors       HASH  job id -> error text
KEYS[5] checkpoints  HASH  job id -> checkpoint
KEYS[6] state        ZSET  the set the jobs are in: the queue's failed (status failed), or
                           finished (complete, cancelled and expired)

ARGV[1] status  string   failed | complete | cancelled | expired: only jobs with this status are
                         deleted
ARGV[2] count   integer  1..PURGE_BATCH_MAX, with no ids: look at `count` jobs of the set from
                         `offset`
ARGV[3] offset  integer  0..OFFSET_MAX, rank to start at (jobs kept by earlier batches are
                         skipped)
ARGV[4] id      string   optional: the first job id (JOB_ID_PATTERN) to delete; more may follow
                         (at most PURGE_BATCH_MAX)

Returns: { number deleted, number looked at }; the caller repeats, moving `offset` past the
  jobs it kept, until nothing is looked at.
  A parent's subtask outcomes (its own key) expire with it, or go with `purge` of the parent
  from Python, which deletes that key in a call of its own.
Errors (nothing is changed): BAD_KEYS; BAD_ARGUMENT.
]]

local PURGEABLE = {
  [STATUS.FAILED] = true, [STATUS.COMPLETE] = true, [STATUS.CANCELLED] = true, [STATUS.EXPIRED] = true,
}

local function purge(KEYS, ARGV)
  local jobs_key, state_key = KEYS[1], KEYS[6]
  local refused = check_keys(KEYS, 'psq_purge')
  if refused then return refused end
  local status = ARGV[1]
  local count, offset = as_int(ARGV[2], 1, PURGE_BATCH_MAX), as_int(ARGV[3], 0, OFFSET_MAX)
  if #ARGV < 3 or not PURGEABLE[status] or not count or not offset or #ARGV - 3 > PURGE_BATCH_MAX then
    return bad_argument('status must be failed, complete, cancelled or expired; count in 1..' .. PURGE_BATCH_MAX
      .. ', offset in 0..' .. OFFSET_MAX .. ', then at most ' .. PURGE_BATCH_MAX .. ' ids')
  end
  local set_name = status == STATUS.FAILED and 'failed' or 'finished'
  if state_key:sub(-#set_name - 1) ~= ':' .. set_name then
    return error_reply(ERR.BAD_KEYS, 'KEYS[6] must be the ' .. set_name .. ' set for status ' .. status)
  end
  for i = 4, #ARGV do
    if not is_job_id(ARGV[i]) then return bad_argument('job id ' .. (i - 3) .. ' is malformed') end
  end
  local ids = {}
  if #ARGV > 3 then
    for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
  else
    ids = redis.call('ZRANGE', state_key, int(offset), int(offset + count - 1))
  end
  local doomed = {}
  for _, id in ipairs(ids) do
    local raw = redis.call('HGET', jobs_key, id)
    local job = decode_job(raw)
    local corrupt_failed = raw and not job and status == STATUS.FAILED
    if (job and job.status == status) or corrupt_failed then doomed[#doomed + 1] = id end
  end
  if #doomed > 0 then
    redis.call('ZREM', state_key, unpack(doomed))
    for i = 1, 5 do redis.call('HDEL', KEYS[i], unpack(doomed)) end
  end
  return { #doomed, #ids }
end

redis.register_function('psq_purge', purge)
