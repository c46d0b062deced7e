--[[ psq_forget_notices: the parents' queues have recorded these subtask outcomes.

KEYS[1] notices  ZSET  subtask id -> time it ended (ms)

ARGV[1] id  string  a subtask id (JOB_ID_PATTERN); more may follow in ARGV[2], ARGV[3], ...
                    1..FORGET_BATCH_MAX ids in all

Returns: the number of notices removed.
Errors (nothing is changed): BAD_KEYS; BAD_ARGUMENT.
]]

local function forget_notices(KEYS, ARGV)
  local refused = check_keys(KEYS, 'psq_forget_notices')
  if refused then return refused end
  if #ARGV < 1 or #ARGV > FORGET_BATCH_MAX then
    return bad_argument('pass 1..' .. FORGET_BATCH_MAX .. ' subtask ids')
  end
  for i = 1, #ARGV do
    if not is_job_id(ARGV[i]) then return bad_argument('subtask id ' .. i .. ' is malformed') end
  end
  return redis.call('ZREM', KEYS[1], unpack(ARGV))
end

redis.register_function('psq_forget_notices', forget_notices)
