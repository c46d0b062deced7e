--[[ psq_subtask_outcomes: a page of one split's subtask outcomes, in subtask order (read-only).

KEYS[1] subtasks  HASH  the parent's subtask outcomes

ARGV[1] split  integer  split number
ARGV[2] first  integer  >= 1, first subtask index of the page
ARGV[3] count  integer  1..1000, page size

Returns: one entry per index: JSON {"ok": true, "result": ...} or {"ok": false, "error": ...},
  or false for a subtask with no outcome (e.g. cancelled).
Errors: BAD_ARGUMENT.
]]

local OUTCOMES_PAGE_MAX = 1000

local function subtask_outcomes(KEYS, ARGV)
  local number, first, count = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
  if not first or first < 1 or not count or count < 1 or count > OUTCOMES_PAGE_MAX then
    return error_reply(ERR.BAD_ARGUMENT, 'first must be >= 1 and count in 1..' .. OUTCOMES_PAGE_MAX)
  end
  local fields = {}
  for i = 0, count - 1 do fields[i + 1] = number .. ':' .. (first + i) end
  return redis.call('HMGET', KEYS[1], unpack(fields))
end

redis.register_function { function_name = 'psq_subtask_outcomes', callback = subtask_outcomes,
  flags = { 'no-writes' } }
