--[[ psq_set_progress: store a running job's progress in its record (field `progress`).

Only the holder of the job's lease may write it (the fencing token); the value stays in the
record after the job ends, so `Job.info().progress` shows the last one.

KEYS[1] jobs  HASH  job id -> job record (JSON)

ARGV[1] id        string  job id (JOB_ID_PATTERN)
ARGV[2] token     string  fencing token of the lease (TOKEN_LENGTH lowercase hex characters)
ARGV[3] progress  string  JSON text, at most PROGRESS_MAX_BYTES bytes, nested at most
                          PROGRESS_DEPTH_MAX deep

Returns: 1.
Errors (nothing is changed): BAD_KEYS; BAD_ARGUMENT; TOO_LARGE (over PROGRESS_MAX_BYTES);
  NOT_FOUND; STALE_TOKEN when the token no longer holds the lease.
]]

local PROGRESS_MAX_BYTES = {{ PROGRESS_MAX_BYTES }}
local PROGRESS_DEPTH_MAX = {{ PROGRESS_DEPTH_MAX }}

local function set_progress(KEYS, ARGV)
  local refused = check_keys(KEYS, 'psq_set_progress')
  if refused then return refused end
  if #ARGV ~= 3 then return bad_argument('pass id, token and progress') end
  local id, token, text = ARGV[1], ARGV[2], ARGV[3]
  local refusal = check_id_token(id, token)
  if refusal then return refusal end
  if #text > PROGRESS_MAX_BYTES then
    return error_reply(ERR.TOO_LARGE, 'job ' .. id .. ': progress of ' .. #text
      .. ' bytes exceeds the limit of ' .. PROGRESS_MAX_BYTES .. ' bytes')
  end
  local ok, value = pcall(cjson.decode, text)
  -- Shallow enough that the record it goes into still decodes (decode_job allows depth 8).
  if text == '' or not ok or not all_finite(value, PROGRESS_DEPTH_MAX) then
    return bad_argument('job ' .. id .. ': progress must be JSON text nested at most '
      .. PROGRESS_DEPTH_MAX .. ' deep')
  end
  local job, code, message = job_under_lease(KEYS[1], id, token)
  if not job then return error_reply(code, message) end
  job.progress = value
  redis.call('HSET', KEYS[1], id, cjson.encode(job))
  return 1
end

redis.register_function('psq_set_progress', set_progress)
