--[[ psq_list_jobs: one page of the jobs in a state set, with their records (read-only).

KEYS[1] state  ZSET  the set to list (ready, delayed, active, failed or finished)
KEYS[2] jobs   HASH  job id -> job record (JSON)

ARGV[1] offset  integer  >= 0, first rank of the page (lowest score first)
ARGV[2] count   integer  1..1000, page size

Returns: pairs of id and job record (false when the record is missing).
Errors: BAD_ARGUMENT.
]]

local PAGE_MAX = 1000

local function list_jobs(KEYS, ARGV)
  local offset, count = tonumber(ARGV[1]), tonumber(ARGV[2])
  if not offset or offset < 0 or not count or count < 1 or count > PAGE_MAX then
    return error_reply(ERR.BAD_ARGUMENT, 'offset must be >= 0 and count in 1..' .. PAGE_MAX)
  end
  local ids = redis.call('ZRANGE', KEYS[1], offset, offset + count - 1)
  local reply = {}
  for _, id in ipairs(ids) do
    reply[#reply + 1] = id
    reply[#reply + 1] = redis.call('HGET', KEYS[2], id)
  end
  return reply
end

redis.register_function { function_name = 'psq_list_jobs', callback = list_jobs, flags = { 'no-writes' } }
