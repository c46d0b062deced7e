--[[ psq_add_dependent: a job of some queue waits for this job; tell it when this job ends.

The caller first enqueues the dependent (psq_enqueue with depends_on: it waits), then calls
this in each dependency's queue. A dependency that has not ended notes the dependent in its
record (`dependents`, at most DEPENDENTS_MAX): its end adds a notice (psq_complete_many,
psq_fail, psq_cancel, psq_pop) that the worker delivers (psq_dependency_done in the
dependent's queue). A dependency that ended already is reported, and the caller delivers its
outcome itself. Registering the same dependent twice is a no-op.

KEYS[1] jobs    HASH  job id -> job record (JSON), in the dependency's queue
KEYS[2] errors  HASH  job id -> error text

ARGV[1] id          string  the dependency's job id (JOB_ID_PATTERN)
ARGV[2] queue       string  the dependent's queue (QUEUE_NAME_PATTERN)
ARGV[3] dependent   string  the dependent's job id

Returns: { state, text }: 'pending' and '' when the dependent was noted (or was already);
  'complete' and ''; 'failed', 'cancelled' or 'expired' and the error text; 'missing' and ''
  when there is no such job (or its record was corrupt).
Errors (nothing is changed): BAD_KEYS; BAD_ARGUMENT; BAD_STATE when the job has
  DEPENDENTS_MAX dependents already.
]]

local ENDED = { [STATUS.COMPLETE] = true, [STATUS.FAILED] = true, [STATUS.CANCELLED] = true,
  [STATUS.EXPIRED] = true }

local function add_dependent(KEYS, ARGV)
  local refused = check_keys(KEYS, 'psq_add_dependent')
  if refused then return refused end
  if #ARGV ~= 3 then return bad_argument('pass id, queue and dependent') end
  local id, queue, dependent = ARGV[1], ARGV[2], ARGV[3]
  if not is_job_id(id) or not is_job_id(dependent) then
    return bad_argument('id and dependent must be well-formed job ids')
  end
  if not is_queue_name(queue) then return bad_argument('queue must be a well-formed queue name') end
  local job = decode_job(redis.call('HGET', KEYS[1], id))
  if not job then return { 'missing', '' } end
  if ENDED[job.status] then
    local text = ''
    if job.status ~= STATUS.COMPLETE then text = redis.call('HGET', KEYS[2], id) or job.status end
    return { job.status, text }
  end
  local dependents = job.dependents
  if type(dependents) ~= 'table' then dependents = {} end
  for _, ref in ipairs(dependents) do
    if type(ref) == 'table' and ref[1] == queue and ref[2] == dependent then return { 'pending', '' } end
  end
  if #dependents >= DEPENDENTS_MAX then
    return error_reply(ERR.BAD_STATE, 'job ' .. id .. ' has ' .. DEPENDENTS_MAX .. ' dependents already')
  end
  dependents[#dependents + 1] = { queue, dependent }
  job.dependents = dependents
  redis.call('HSET', KEYS[1], id, cjson.encode(job))
  return { 'pending', '' }
end

redis.register_function('psq_add_dependent', add_dependent)
