--[[ psq_renew: extend the leases a worker holds, many in one call.

KEYS[1] jobs    HASH  job id -> job record (JSON)
KEYS[2] active  ZSET  job id -> lease deadline (ms)

ARGV[1] lease_ms  integer  1..LEASE_MS_MAX, new lease length from now
then 0..RENEW_BATCH_MAX pairs from ARGV[2]: id (string, JOB_ID_PATTERN), token (string,
  TOKEN_LENGTH lowercase hex characters)

Returns: one entry per pair: the new lease deadline (ms), or 0 when the token no longer holds
  the lease (reclaimed, cancelled or finished): the worker must stop that run.
Errors (nothing is changed): BAD_KEYS; BAD_ARGUMENT.
]]

local function renew(KEYS, ARGV)
  local jobs_key, active_key = KEYS[1], KEYS[2]
  local refused = check_keys(KEYS, 'psq_renew')
  if refused then return refused end
  local lease_ms = as_int(ARGV[1], 1, LEASE_MS_MAX)
  if not lease_ms or #ARGV % 2 ~= 1 or (#ARGV - 1) / 2 > RENEW_BATCH_MAX then
    return bad_argument('pass lease_ms in 1..' .. LEASE_MS_MAX .. ', then at most ' .. RENEW_BATCH_MAX
      .. ' id/token pairs')
  end
  for i = 2, #ARGV, 2 do
    local refusal = check_id_token(ARGV[i], ARGV[i + 1], 'pair ' .. (i / 2) .. ': ')
    if refusal then return refusal end
  end
  local deadline = now_ms() + lease_ms
  local reply = {}
  for i = 2, #ARGV, 2 do
    if job_under_lease(jobs_key, ARGV[i], ARGV[i + 1]) then
      redis.call('ZADD', active_key, 'XX', int(deadline), ARGV[i])
      reply[#reply + 1] = deadline
    else
      reply[#reply + 1] = 0
    end
  end
  return reply
end

redis.register_function('psq_renew', renew)
