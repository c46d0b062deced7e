--[[ psq_stale_notices: subtask outcomes whose delivery to the parent's queue is overdue.

A worker delivers a subtask's outcome to its parent's queue right after the subtask ends
(psq_subtask_done there), then forgets the notice (psq_forget_notices). If it died in between,
the notice stays; any worker re-drives it after NOTICE_REDRIVE_MS. Read-only.

KEYS[1] notices  ZSET  subtask id -> time it ended (ms)
KEYS[2] jobs     HASH  job id -> job record (JSON)
KEYS[3] results  HASH  job id -> result (JSON text)
KEYS[4] errors   HASH  job id -> error text

ARGV[1] count  integer  1..NOTICES_PAGE_MAX, most notices to return

Returns: five entries per notice: subtask id, parent (JSON {queue, id, split, index}),
  '1' completed or '0' failed, result or error text, and the subtask's status. A notice whose
  subtask record is gone comes with four empty strings: forget it.
Errors: BAD_KEYS; BAD_ARGUMENT.
]]

local function stale_notices(KEYS, ARGV)
  local refused = check_keys(KEYS, 'psq_stale_notices')
  if refused then return refused end
  local count = as_int(ARGV[1], 1, NOTICES_PAGE_MAX)
  if #ARGV ~= 1 or not count then return bad_argument('count must be an integer in 1..' .. NOTICES_PAGE_MAX) end
  local before = now_ms() - NOTICE_REDRIVE_MS
  local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', int(before), 'LIMIT', 0, count)
  local reply = {}
  for _, id in ipairs(ids) do
    local job = decode_job(redis.call('HGET', KEYS[2], id))
    if job and type(job.parent) == 'table' then
      local ok = job.status == STATUS.COMPLETE
      reply[#reply + 1] = id
      reply[#reply + 1] = cjson.encode(job.parent)
      reply[#reply + 1] = ok and '1' or '0'
      local fallback = 'unknown error'
      if ok then fallback = 'null' elseif job.status == STATUS.CANCELLED then fallback = 'cancelled' end
      reply[#reply + 1] = redis.call('HGET', ok and KEYS[3] or KEYS[4], id) or fallback
      reply[#reply + 1] = job.status
    else
      for _, value in ipairs({ id, '', '', '', '' }) do reply[#reply + 1] = value end
    end
  end
  return reply
end

redis.register_function { function_name = 'psq_stale_notices', callback = stale_notices,
  flags = { 'no-writes' } }
