--[[ psq_fetch: read one job in full (read-only).

KEYS[1] jobs         HASH  job id -> job record (JSON)
KEYS[2] payloads     HASH  job id -> call payload (JSON text)
KEYS[3] results      HASH  job id -> result (JSON text)
KEYS[4] errors       HASH  job id -> error text
KEYS[5] checkpoints  HASH  job id -> last saved checkpoint (JSON text)
KEYS[6] subtasks     HASH  this job's subtask outcomes: the queue's key subtasks:<id>

ARGV[1] id  string  job id (JOB_ID_PATTERN)

Returns: { record (whole: decode_job fills in what a compact one leaves out), payload,
  result, error, checkpoint, subtasks done in the current split },
  each a string or false when absent.
Errors: BAD_KEYS; BAD_ARGUMENT; NOT_FOUND when the job has no record.
]]

local function fetch(KEYS, ARGV)
  local id = ARGV[1]
  if #ARGV ~= 1 or not is_job_id(id) then return bad_argument('pass one well-formed job id') end
  local refused = check_keys(KEYS, 'psq_fetch', { id })
  if refused then return refused end
  local record = redis.call('HGET', KEYS[1], id)
  if not record then return error_reply(ERR.NOT_FOUND, 'job ' .. id .. ' does not exist') end
  local job = decode_job(record)
  local done = false
  if job and type(job.split) == 'number' then
    done = redis.call('HGET', KEYS[6], int(job.split) .. ':done') or '0'
  end
  return {
    shown_record(record),
    redis.call('HGET', KEYS[2], id),
    redis.call('HGET', KEYS[3], id),
    redis.call('HGET', KEYS[4], id),
    redis.call('HGET', KEYS[5], id),
    done,
  }
end

redis.register_function { function_name = 'psq_fetch', callback = fetch, flags = { 'no-writes' } }
