--[[ psq_fetch: read one job in full (read-only).

KEYS[1] jobs      HASH  job id -> job record (JSON)
KEYS[2] payloads  HASH  job id -> call payload (JSON text)
KEYS[3] results   HASH  job id -> result (JSON text)
KEYS[4] errors    HASH  job id -> error text

ARGV[1] id  string  job id

Returns: { record, payload, result, error }, each a string or false when absent.
Errors: NOT_FOUND when the job has no record.
]]

local function fetch(KEYS, ARGV)
  local id = ARGV[1]
  local record = redis.call('HGET', KEYS[1], id)
  if not record then return error_reply(ERR.NOT_FOUND, 'job ' .. id .. ' does not exist') end
  return {
    record,
    redis.call('HGET', KEYS[2], id),
    redis.call('HGET', KEYS[3], id),
    redis.call('HGET', KEYS[4], id),
  }
end

redis.register_function { function_name = 'psq_fetch', callback = fetch, flags = { 'no-writes' } }
