--[[ psq_subtask_outcomes: a page of one split's subtask outcomes, in subtask order (read-only).

KEYS[1] subtasks  HASH  the parent's subtask outcomes: the queue's key subtasks:<parent>

ARGV[1] parent  string   the parent job id (JOB_ID_PATTERN)
ARGV[2] split   integer  1..SPLIT_TOTAL_MAX, split number
ARGV[3] first   integer  1..SPLIT_TOTAL_MAX, first subtask index of the page
ARGV[4] count   integer  1..OUTCOMES_PAGE_MAX, page size

Returns: one entry per index: JSON {"ok": true, "result": ...} or {"ok": false, "error": ...},
  or false for a subtask with no outcome (e.g. cancelled).
Errors: BAD_KEYS; BAD_ARGUMENT.
]]

local function subtask_outcomes(KEYS, ARGV)
  local parent_id = ARGV[1]
  if #ARGV ~= 4 or not is_job_id(parent_id) then
    return bad_argument('pass parent, split, first and count')
  end
  local refused = check_keys(KEYS, 'psq_subtask_outcomes', { parent_id })
  if refused then return refused end
  local number, first = as_int(ARGV[2], 1, SPLIT_TOTAL_MAX), as_int(ARGV[3], 1, SPLIT_TOTAL_MAX)
  local count = as_int(ARGV[4], 1, OUTCOMES_PAGE_MAX)
  if not number or not first or not count then
    return bad_argument('split and first must be integers in 1..' .. SPLIT_TOTAL_MAX
      .. ' and count in 1..' .. OUTCOMES_PAGE_MAX)
  end
  local fields = {}
  for i = 0, count - 1 do fields[i + 1] = number .. ':' .. (first + i) end
  return redis.call('HMGET', KEYS[1], unpack(fields))
end

redis.register_function { function_name = 'psq_subtask_outcomes', callback = subtask_outcomes,
  flags = { 'no-writes' } }
