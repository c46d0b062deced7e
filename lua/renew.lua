--[[ psq_renew: extend the leases a worker holds, many in one call.

KEYS[1] jobs    HASH  job id -> job record (JSON)
KEYS[2] active  ZSET  job id -> lease deadline (ms)

ARGV[1] lease_ms  integer  > 0, new lease length from now
then pairs from ARGV[2]: id (string), token (integer)

Returns: one entry per pair: the new lease deadline (ms), or 0 when the token no longer holds
  the lease (reclaimed, cancelled or finished): the worker must stop that run.
Errors: BAD_ARGUMENT.
]]

local function renew(KEYS, ARGV)
  local jobs_key, active_key = KEYS[1], KEYS[2]
  local lease_ms = tonumber(ARGV[1])
  if not lease_ms or lease_ms <= 0 or #ARGV % 2 ~= 1 then
    return error_reply(ERR.BAD_ARGUMENT, 'lease_ms must be positive, followed by id/token pairs')
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
