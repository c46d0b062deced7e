--[[ psq_configure: change a queue's settings (pause, limits, aging), stored in Redis.

KEYS[1] config  HASH  queue settings: paused, concurrency, rate, period_ms, aging, the size
                      limits and max_lost_leases
KEYS[2] wake    LIST  wake-up tokens for idle workers
KEYS[3] ready   ZSET  job id -> priority/FIFO score (aging can change only while it is empty)

ARGV[1] field  string  a setting: paused ('1' or ''), concurrency (integer 1..2^31), rate
                       (integer 1..2^31), period_ms (integer 1..2^40; rate and period_ms go
                       together), aging (number in (0, 1e6], priority levels gained per second
                       waited), max_payload_bytes, max_result_bytes, max_checkpoint_bytes,
                       max_error_bytes (integers 1..SIZE_LIMIT_MAX; absent: the defaults),
                       max_lost_leases (integer 1..MAX_LOST_LEASES_LIMIT, how many expired
                       leases a job survives before it fails for good; absent: MAX_LOST_LEASES),
                       no_preemption ('1' or ''; '1': no running job pauses for a higher one)
ARGV[2] value  string  its new value; '' removes the setting
then more field/value pairs in ARGV[3], ARGV[4], ... (0..CONFIGURE_PAIRS_MAX pairs; none:
only read the settings). Workers are woken, since a resumed queue or
a raised limit may free work. Removing one of rate and period_ms removes both; setting one
needs the other, given in the same call or already set.

Returns: the settings after the change, as field/value pairs.
Errors (nothing is changed): BAD_KEYS; BAD_ARGUMENT; BAD_STATE when aging would change while jobs are
  ready: their scores were computed under the old rule, so mixing would starve one side.
  Pause the queue and let it drain, or set aging before jobs arrive.
]]

-- Each setting's highest value (paused and no_preemption are '1' or '').
local SETTINGS = { paused = true, concurrency = 2 ^ 31, rate = 2 ^ 31, period_ms = 2 ^ 40, aging = 1e6,
  max_payload_bytes = SIZE_LIMIT_MAX, max_result_bytes = SIZE_LIMIT_MAX,
  max_checkpoint_bytes = SIZE_LIMIT_MAX, max_error_bytes = SIZE_LIMIT_MAX,
  max_lost_leases = MAX_LOST_LEASES_LIMIT, no_preemption = true }

local function configure(KEYS, ARGV)
  local config_key, wake_key, ready_key = KEYS[1], KEYS[2], KEYS[3]
  local refused = check_keys(KEYS, 'psq_configure')
  if refused then return refused end
  if #ARGV % 2 ~= 0 or #ARGV / 2 > CONFIGURE_PAIRS_MAX then
    return bad_argument('pass at most ' .. CONFIGURE_PAIRS_MAX .. ' field/value pairs')
  end
  for i = 1, #ARGV, 2 do
    local field, value = ARGV[i], ARGV[i + 1]
    local most = SETTINGS[field]
    if not most then
      return bad_argument('unknown setting ' .. field)
    end
    if field == 'paused' or field == 'no_preemption' then
      if value ~= '' and value ~= '1' then
        return bad_argument(field .. " must be '1' or ''")
      end
    elseif field == 'aging' then
      local number = as_number(value, 0, most)
      if value ~= '' and (not number or number <= 0) then
        return bad_argument('aging must be a positive number up to ' .. most)
      end
    elseif value ~= '' and not as_int(value, 1, most) then
      return bad_argument(field .. ' must be an integer in 1..' .. int(most))
    end
  end
  for i = 1, #ARGV, 2 do
    if ARGV[i] == 'aging' and ARGV[i + 1] ~= (redis.call('HGET', config_key, 'aging') or '')
        and redis.call('ZCARD', ready_key) > 0 then
      return error_reply(ERR.BAD_STATE, 'aging can change only while no job is ready')
    end
  end
  -- rate and period_ms after the change: setting one without the other is refused.
  local rate_pair = redis.call('HMGET', config_key, 'rate', 'period_ms')
  local cleared = false
  for i = 1, #ARGV, 2 do
    local at = ARGV[i] == 'rate' and 1 or ARGV[i] == 'period_ms' and 2
    if at then
      rate_pair[at] = ARGV[i + 1] ~= '' and ARGV[i + 1]
      cleared = cleared or ARGV[i + 1] == ''
    end
  end
  if not cleared and (not rate_pair[1]) ~= (not rate_pair[2]) then
    return error_reply(ERR.BAD_ARGUMENT, 'rate and period_ms go together: set both')
  end
  for i = 1, #ARGV, 2 do
    if ARGV[i + 1] == '' then
      redis.call('HDEL', config_key, ARGV[i])
    else
      redis.call('HSET', config_key, ARGV[i], ARGV[i + 1])
    end
    if ARGV[i] == 'aging' then
      if ARGV[i + 1] == '' then
        redis.call('HDEL', config_key, 'aging_base')
      else
        redis.call('HSET', config_key, 'aging_base', int(now_ms()))
      end
    end
  end
  local has_rate = redis.call('HEXISTS', config_key, 'rate') == 1
  if has_rate ~= (redis.call('HEXISTS', config_key, 'period_ms') == 1) then
    redis.call('HDEL', config_key, 'rate', 'period_ms')
  end
  wake_workers(wake_key, WAKE_TOKENS_MAX)
  return redis.call('HGETALL', config_key)
end

redis.register_function('psq_configure', configure)
