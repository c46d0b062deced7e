--[[ psq_list_jobs: one page of the jobs in a state set, with their records (read-only).

KEYS[1] state  ZSET  the set to list: the queue's ready, delayed, active, waiting, failed or
                     finished
KEYS[2] jobs   HASH  job id -> job record (JSON)

ARGV[1] offset  integer  0..OFFSET_MAX, first rank of the page (lowest score first)
ARGV[2] count   integer  1..LIST_PAGE_MAX, page size

Returns: pairs of id and job record (whole, as psq_fetch shows it; false when missing).
Errors: BAD_KEYS; BAD_ARGUMENT.
]]

local function list_jobs(KEYS, ARGV)
  local refused = check_keys(KEYS, 'psq_list_jobs')
  if refused then return refused end
  local offset, count = as_int(ARGV[1], 0, OFFSET_MAX), as_int(ARGV[2], 1, LIST_PAGE_MAX)
  if #ARGV ~= 2 or not offset or not count then
    return bad_argument('pass offset in 0..' .. OFFSET_MAX .. ' and count in 1..' .. LIST_PAGE_MAX)
  end
  local ids = redis.call('ZRANGE', KEYS[1], int(offset), int(offset + count - 1))
  local reply = {}
  for _, id in ipairs(ids) do
    reply[#reply + 1] = id
    local raw = redis.call('HGET', KEYS[2], id)
    reply[#reply + 1] = raw and shown_record(raw)
  end
  return reply
end

redis.register_function { function_name = 'psq_list_jobs', callback = list_jobs, flags = { 'no-writes' } }
