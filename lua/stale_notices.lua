--[[ psq_stale_notices: job ends whose delivery to a parent's or dependents' queue is overdue.

A worker delivers a subtask's outcome to its parent's queue right after the subtask ends
(psq_subtask_done there), then forgets the notice (psq_forget_notices). If it died in between,
the notice stays; any worker re-drives it after NOTICE_REDRIVE_MS. Read-only. The same holds
for the end of a job others depend on (its record's `dependents`: psq_dependency_done). A job
the library ends with no worker told (psq_pop expiring it or failing it for lost leases,
psq_complete_many refusing its result) has its notice stamped due at once.

KEYS[1] notices  ZSET  subtask id -> time it ended (ms)
KEYS[2] jobs     HASH  job id -> job record (JSON)
KEYS[3] results  HASH  job id -> result (JSON text)
KEYS[4] errors   HASH  job id -> error text

ARGV[1] count  integer  1..NOTICES_PAGE_MAX, most notices to return

Returns: six entries per notice: job id, parent (JSON {queue, id, split, index}, or '' for a
  job that is no subtask), '1' completed or '0' failed, result or error text, the job's status,
  and its dependents (JSON [ [queue, id], ... ], or ''). A notice whose record is gone (or names
  neither) comes with five empty strings: forget it.
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
    local dependents = job and type(job.dependents) == 'table' and #job.dependents > 0
    if job and (type(job.parent) == 'table' or dependents) then
      local ok = job.status == STATUS.COMPLETE
      reply[#reply + 1] = id
      reply[#reply + 1] = type(job.parent) == 'table' and cjson.encode(job.parent) or ''
      reply[#reply + 1] = ok and '1' or '0'
      local fallback = 'unknown error'
      if ok then fallback = 'null' elseif job.status == STATUS.CANCELLED then fallback = 'cancelled' end
      reply[#reply + 1] = redis.call('HGET', ok and KEYS[3] or KEYS[4], id) or fallback
      reply[#reply + 1] = job.status
      reply[#reply + 1] = dependents and cjson.encode(job.dependents) or ''
    else
      for _, value in ipairs({ id, '', '', '', '', '' }) do reply[#reply + 1] = value end
    end
  end
  return reply
end

redis.register_function { function_name = 'psq_stale_notices', callback = stale_notices,
  flags = { 'no-writes' } }
