-- Shared helpers and constants, rendered once at the top of the library.
-- The constants come from pyscheduler/protocol.py (the single source of truth).
-- Included by library.lua.j2; the operation files call these, never copy them.
-- Helpers that touch several keys take `Q`, a table of the calling operation's KEYS by name
-- (jobs, ready, ...); each operation's header lists the keys it passes.

local STATUS = {
{%- for name, value in S.items() %}
  {{ name }} = '{{ value }}',
{%- endfor %}
}
local ERR = {
{%- for name, value in E.items() %}
  {{ name }} = '{{ value }}',
{%- endfor %}
}
local KIND = {
{%- for name, value in K.items() %}
  {{ name }} = '{{ value }}',
{%- endfor %}
}
local PRIORITY_MIN = {{ PRIORITY_MIN }}
local PRIORITY_MAX = {{ PRIORITY_MAX }}
local SEQUENCE_SPAN = {{ SEQUENCE_SPAN }}
local PROMOTE_BATCH = {{ PROMOTE_BATCH }}
local RECLAIM_BATCH = {{ RECLAIM_BATCH }}
local SWEEP_BATCH = {{ SWEEP_BATCH }}
local ENQUEUE_BATCH_MAX = {{ ENQUEUE_BATCH_MAX }}
local RELEASE_BATCH_MAX = {{ RELEASE_BATCH_MAX }}
local COMPLETE_BATCH_MAX = {{ COMPLETE_BATCH_MAX }}
local WAKE_TOKENS_MAX = {{ WAKE_TOKENS_MAX }}
local PAST_TOLERANCE_MS = {{ PAST_TOLERANCE_MS }}
local MAX_LOST_LEASES = {{ MAX_LOST_LEASES }}
local MAX_LOST_LEASES_LIMIT = {{ MAX_LOST_LEASES_LIMIT }}
local MAX_BACKOFF_MS = {{ MAX_BACKOFF_MS }}
local NOTICE_REDRIVE_MS = {{ NOTICE_REDRIVE_MS }}
local DEPENDS_MAX = {{ DEPENDS_MAX }}
local DEPENDENTS_MAX = {{ DEPENDENTS_MAX }}
local RETRY_ON_MAX = {{ RETRY_ON_MAX }}
local EXCEPTION_NAME_MAX_BYTES = {{ EXCEPTION_NAME_MAX_BYTES }}
local UNIQUE_KEY_MAX_BYTES = {{ UNIQUE_KEY_MAX_BYTES }}
local TOKEN_LENGTH = {{ TOKEN_LENGTH }}
local KEY_PREFIX = '{{ KEY_PREFIX }}'
local POP_BATCH_MAX = {{ POP_BATCH_MAX }}
local RENEW_BATCH_MAX = {{ RENEW_BATCH_MAX }}
local CANCEL_BATCH_MAX = {{ CANCEL_BATCH_MAX }}
local RETRY_BATCH_MAX = {{ RETRY_BATCH_MAX }}
local PURGE_BATCH_MAX = {{ PURGE_BATCH_MAX }}
local FORGET_BATCH_MAX = {{ FORGET_BATCH_MAX }}
local LIST_PAGE_MAX = {{ LIST_PAGE_MAX }}
local OUTCOMES_PAGE_MAX = {{ OUTCOMES_PAGE_MAX }}
local NOTICES_PAGE_MAX = {{ NOTICES_PAGE_MAX }}
local CONFIGURE_PAIRS_MAX = {{ CONFIGURE_PAIRS_MAX }}
local SPLIT_TOTAL_MAX = {{ SPLIT_TOTAL_MAX }}
local LEASE_MS_MAX = {{ LEASE_MS_MAX }}
local DELAY_MS_MAX = {{ DELAY_MS_MAX }}
local TIME_S_MAX = {{ TIME_S_MAX }}
local RETRIES_MAX = {{ RETRIES_MAX }}
local FUNC_MAX_BYTES = {{ FUNC_MAX_BYTES }}
local WORKER_NAME_MAX_BYTES = {{ WORKER_NAME_MAX_BYTES }}
local OFFSET_MAX = {{ OFFSET_MAX }}
local SIZE_LIMIT_MAX = {{ SIZE_LIMIT_MAX }}
-- The payload of a call without arguments, which is not stored: its record has no
-- `payload` field (one with `"payload": true` and no payload has lost it).
local EMPTY_PAYLOAD = '{"args":[],"kwargs":{}}'
local SIZE_LIMIT_DEFAULTS = {
{%- for name, value in SIZE_LIMIT_DEFAULTS.items() %}
  {{ name }} = {{ value | tojson }},
{%- endfor %}
}
local HISTOGRAM_BOUNDS_MS = {
{%- for row in HISTOGRAM_BOUNDS_MS|batch(8) %}
  {% for bound in row %}{{ bound }},{% if not loop.last %} {% endif %}{% endfor %}
{%- endfor %}
}
-- Bucket i holds the times up to bound i, the last one those above every bound.
local HISTOGRAM_BUCKETS = {{ HISTOGRAM_BOUNDS_MS|length + 1 }}
local THROUGHPUT_MINUTES = {{ THROUGHPUT_MINUTES }}
local EVENT_KINDS = { {% for kind in EVENT_KINDS %}'{{ kind }}'{% if not loop.last %}, {% endif %}{% endfor %} }
local EVENT_IDS_MAX = {{ EVENT_IDS_MAX }}
local EVENTS_MAXLEN = {{ EVENTS_MAXLEN }}
local STAT_FIELDS = {
{%- for row in STAT_FIELDS|batch(6) %}
  {% for name in row %}'{{ name }}',{% if not loop.last %} {% endif %}{% endfor %}
{%- endfor %}
}
local QUEUE_NAME_MAX = {{ QUEUE_NAME_MAX }}
local JOB_ID_MAX = {{ JOB_ID_MAX }}
local QUEUE_NAME_PATTERN = '{{ QUEUE_NAME_LUA }}'
local JOB_ID_PATTERN = '{{ JOB_ID_LUA }}'

-- Each function's fixed KEYS by name, in order (pyscheduler/operations.py); '{{ STATE_KEY }}' is
-- one of STATE_SETS. A function with per-item keys takes one `subtasks:<id>` key per job id
-- after them.
local OPERATION_KEYS = {
{%- for op in OPERATION_TABLE %}
  {{ op.name }} = {
  {%- for row in op.keys|batch(8) %}
    {% for key in row %}'{{ key }}',{% if not loop.last %} {% endif %}{% endfor %}
  {%- endfor %}
  },
{%- endfor %}
}
local KEY_TYPES = {
{%- for name, kind in KEY_TYPES.items() %}
  {{ name }} = '{{ kind }}',
{%- endfor %}
}
local STATE_SETS = {
{%- for name in STATE_SETS %}
  {{ name }} = true,
{%- endfor %}
}

-- Milliseconds from the Redis server's clock, so clients with skewed clocks agree.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Whole numbers up to 2^53 are exact doubles, and well within the C long '%d' converts to.
local INT_EXACT = 2 ^ 53
-- Integers are passed to Redis as exact decimal strings: Lua's default number format
-- keeps 14 digits, too few for ready-set scores.
local function int(n)
  -- '-0' (from -0 or a tiny negative) is not an integer to Redis.
  if n > -0.5 and n < 0.5 then return '0' end
  -- '%d' formats a whole number as an integer, without the floating-point conversion that
  -- '%.0f' costs (a few thousand instructions, for each score and timestamp of a call).
  if n % 1 == 0 and n > -INT_EXACT and n < INT_EXACT then return string.format('%d', n) end
  return string.format('%.0f', n)
end

-- A fencing token or a pop nonce: TOKEN_LENGTH lowercase hex characters.
local function is_token(value)
  return type(value) == 'string' and #value == TOKEN_LENGTH and value:find('^[0-9a-f]+$') ~= nil
end

-- The fencing token of one lease: the popping worker's random nonce (fresh per call) hashed
-- with the lease's own sequence number, so tokens of one call differ and none can be guessed.
local function lease_token(nonce, seq)
  return string.sub(redis.sha1hex(nonce .. ':' .. int(seq)), 1, TOKEN_LENGTH)
end

local function error_reply(code, message)
  return redis.error_reply(code .. ' ' .. message)
end

local function bad_argument(message)
  return redis.error_reply(ERR.BAD_ARGUMENT .. ' ' .. message)
end

-- Argument checks: each returns the value when it is well formed and in range, else nil.
-- Every function runs them on all its arguments before its first write.

-- An integer written in decimal digits (a '-' allowed): no fraction, exponent, hex, spaces,
-- NaN or infinity; lo..hi.
-- A count setting as psq_configure stores it (a positive integer); nil for anything else a
-- writer other than the library may have put there. psq_pop and psq_start_run read the limits
-- with it, so they agree on whether a queue has one.
local function setting_count(value)
  local n = tonumber(value)
  if n and n >= 1 and n < 2 ^ 53 then return math.floor(n) end
  return nil
end

local function as_int(text, lo, hi)
  if type(text) ~= 'string' or #text > 17 or not text:find('^%-?%d+$') then return nil end
  local n = tonumber(text)
  if not n or n < lo or n > hi then return nil end
  return n + 0  -- '-0' reads as -0: make it 0
end

-- A finite decimal number (fraction and exponent allowed, no hex, NaN or infinity); lo..hi.
local function as_number(text, lo, hi)
  if type(text) ~= 'string' or #text > 32 then return nil end
  if not (text:find('^%-?%d+%.?%d*$') or text:find('^%-?%.%d+$')
      or text:find('^%-?%d+%.?%d*[eE][%-+]?%d+$') or text:find('^%-?%.%d+[eE][%-+]?%d+$')) then
    return nil
  end
  local n = tonumber(text)
  if not n or n ~= n or n == math.huge or n == -math.huge or n < lo or n > hi then return nil end
  return n
end

local function is_job_id(value)
  return type(value) == 'string' and #value >= 1 and #value <= JOB_ID_MAX
    and value:find(JOB_ID_PATTERN) ~= nil
end

local function is_queue_name(value)
  return type(value) == 'string' and #value >= 1 and #value <= QUEUE_NAME_MAX
    and value:find(QUEUE_NAME_PATTERN) ~= nil
end

-- A refusal of a call naming a job and a lease unless `id` is a job id and `token` a fencing
-- token; else nil. `item` ('pair 2: ') names the item of a batch in the message.
local function check_id_token(id, token, item)
  if is_job_id(id) and is_token(token) then return nil end
  return bad_argument((item or '') .. 'not a job id and a token of ' .. TOKEN_LENGTH
    .. ' lowercase hex characters')
end

-- Text that decodes as JSON (stored as the text given: payloads, results, checkpoints).
local function is_json(value)
  if type(value) ~= 'string' or value == '' then return false end
  local ok = pcall(cjson.decode, value)
  return ok
end

-- The last line of a text that is not blank (a pattern would backtrack: quadratic time on
-- long lines).
local function last_line_of(text)
  local stop = #text
  while stop > 0 and text:byte(stop) <= 32 do stop = stop - 1 end
  local start = stop
  while start > 0 and text:byte(start) ~= 10 do start = start - 1 end
  return text:sub(start + 1, stop)
end

-- A refusal when `key` exists holding another type than `expected` ('hash', 'zset', ...).
local function wrong_type(key, expected)
  local found = redis.call('TYPE', key)['ok']
  if found ~= 'none' and found ~= expected then
    return error_reply(ERR.BAD_KEYS, key .. ' holds a ' .. found .. ', not a ' .. expected)
  end
  return nil
end

-- The keys of each queue a call named, by key name ('jobs' -> 'psq:{Q}:jobs'; [1]: the prefix),
-- built once per queue name rather than on every call: a cache of at most KEY_CACHE_MAX queues
-- kept between calls (the values follow from the name alone).
local KEY_CACHE_MAX = 1000
local QUEUE_OF_KEY = '^' .. KEY_PREFIX .. ':{([^}]*)}:'
local key_cache, key_cache_size = {}, 0
local function keys_of_queue(queue)
  local keys = key_cache[queue]
  if not keys then
    if key_cache_size >= KEY_CACHE_MAX then key_cache, key_cache_size = {}, 0 end
    keys = { KEY_PREFIX .. ':{' .. queue .. '}:' }
    key_cache[queue] = keys
    key_cache_size = key_cache_size + 1
  end
  return keys
end
local function key_of(keys, key_name)
  local key = keys[key_name]
  if not key then
    key = keys[1] .. key_name
    keys[key_name] = key
  end
  return key
end

-- Check a call's KEYS against its row of OPERATION_KEYS: the right number (the fixed keys,
-- then one subtasks key per id in `ids`, when given), KEYS[1] a key of a valid queue, and each
-- key exactly that queue's key of the expected name, so a call cannot mix queues or keys; and
-- each key absent or of its type (KEY_TYPES), the sequence counter an integer, the stats
-- counters integers.
-- Returns nil when they are right, else the error reply to return. With `names_only` the
-- types are left to the caller (psq_enqueue checks those it writes, each with its first read).
local function check_keys(keys, name, ids, names_only)
  local fixed = OPERATION_KEYS[name]
  local want = #fixed + (ids and #ids or 0)
  if #keys ~= want then
    return error_reply(ERR.BAD_KEYS, name .. ' takes ' .. want .. ' keys here, got ' .. #keys)
  end
  if want == 0 then return nil end
  local queue = string.match(keys[1], QUEUE_OF_KEY)
  if not is_queue_name(queue) then
    return error_reply(ERR.BAD_KEYS, 'KEYS[1] is not a key of a valid queue: ' .. keys[1])
  end
  local queue_keys = keys_of_queue(queue)
  local prefix = queue_keys[1]
  for i, key_name in ipairs(fixed) do
    local key = keys[i]
    local ok
    if key_name == 'state' then
      ok = key:sub(1, #prefix) == prefix and STATE_SETS[key:sub(#prefix + 1)] == true
    else
      ok = key == key_of(queue_keys, key_name)
    end
    if not ok then
      return error_reply(ERR.BAD_KEYS, 'KEYS[' .. i .. '] must be ' .. prefix .. key_name .. ', got ' .. key)
    end
  end
  for n = 1, want - #fixed do
    local expected = prefix .. 'subtasks:' .. ids[n]
    if keys[#fixed + n] ~= expected then
      return error_reply(ERR.BAD_KEYS, 'KEYS[' .. (#fixed + n) .. '] must be ' .. expected
        .. ', got ' .. keys[#fixed + n])
    end
  end
  -- Keys another writer left holding the wrong type or content would fail a command halfway
  -- through the call's writes: refuse the call before any.
  if names_only then return nil end
  for i = 1, want do
    local expected = KEY_TYPES[fixed[i] or 'subtasks']
    local found = redis.call('TYPE', keys[i])['ok']
    if found ~= 'none' and found ~= expected then
      return error_reply(ERR.BAD_KEYS, keys[i] .. ' holds a ' .. found .. ', not a ' .. expected)
    end
    if fixed[i] == 'seq' and found == 'string' and not as_int(redis.call('GET', keys[i]), 0, 2 ^ 53) then
      return error_reply(ERR.BAD_KEYS, keys[i] .. ' does not hold a sequence number')
    end
    if fixed[i] == 'stats' and found == 'hash' then
      for _, count in ipairs(redis.call('HMGET', keys[i], unpack(STAT_FIELDS))) do
        if count and not as_int(count, -2 ^ 53, 2 ^ 53) then
          return error_reply(ERR.BAD_KEYS, keys[i] .. ' holds a counter that is not an integer')
        end
      end
    end
  end
  return nil
end

-- A size limit of the queue from the value of its config field (the library default when
-- there is none or it is not one psq_configure stores).
local function size_limit_of(text, field)
  local value = tonumber(text)
  if not value or value ~= value or value < 1 or value > SIZE_LIMIT_MAX then
    return SIZE_LIMIT_DEFAULTS[field]
  end
  return math.floor(value)
end

-- A size limit of the queue (a field of its config hash, else the library default).
local function size_limit(config_key, field)
  return size_limit_of(redis.call('HGET', config_key, field), field)
end

-- A refusal of a checkpoint to save for job `id` (over the queue's max_checkpoint_bytes:
-- TOO_LARGE; not JSON: BAD_ARGUMENT), else nil.
local function check_checkpoint(config_key, id, saved)
  local limit = size_limit(config_key, 'max_checkpoint_bytes')
  if #saved > limit then
    return error_reply(ERR.TOO_LARGE, 'job ' .. id .. ': checkpoint of ' .. #saved
      .. ' bytes exceeds the limit of ' .. limit .. ' bytes (max_checkpoint_bytes)')
  end
  if not is_json(saved) then return bad_argument('job ' .. id .. ': checkpoint must be JSON text') end
  return nil
end

-- An error text cut to `limit` bytes: its head and its tail (the last line names the error)
-- around a marker, cut at UTF-8 character boundaries.
local function clip_text(text, limit)
  if #text <= limit then return text end
  local marker = '\n[... ' .. (#text - limit) .. '+ bytes cut: error text over ' .. limit .. ' bytes ...]\n'
  local room = limit - #marker
  if room < 2 then return text:sub(1, limit) end
  local head = math.floor(room / 2)
  local tail_start = #text - (room - head) + 1
  -- 0x80..0xBF continue a UTF-8 character: cut before a character's first byte.
  while head > 0 and text:byte(head + 1) and text:byte(head + 1) >= 128 and text:byte(head + 1) < 192 do
    head = head - 1
  end
  while tail_start <= #text and text:byte(tail_start) >= 128 and text:byte(tail_start) < 192 do
    tail_start = tail_start + 1
  end
  return text:sub(1, head) .. marker .. text:sub(tail_start)
end

-- Many jobs' reads and writes of one key go in one command, so a call handling many jobs pays
-- Redis's per-command cost once, not once per job. unpack() handles only a few thousand
-- values, so long argument lists are sent in chunks of CALL_CHUNK values (even: whole pairs).
local CALL_CHUNK = 1000

-- HMGET of any number of fields: the values in the order of `fields`, false where missing.
local function hmget_many(key, fields)
  local values = {}
  for first = 1, #fields, CALL_CHUNK do
    local chunk = redis.call('HMGET', key, unpack(fields, first, math.min(first + CALL_CHUNK - 1, #fields)))
    for i = 1, #chunk do values[first + i - 1] = chunk[i] end
  end
  return values
end

-- A batch of writes (HSET field value, ZADD score member, ZREM member, ...: one value or one
-- pair per write, no options) gathered job by job and sent with one command per command and
-- key by flush_writes, each in the order the writes were queued.
local function new_writes()
  return { order = {}, by_key = {} }
end

-- Write `command key a [b]` now, or with a batch `W`, queue it for flush_writes.
local function write(W, command, key, a, b)
  if not W then
    if b == nil then return redis.call(command, key, a) end
    return redis.call(command, key, a, b)
  end
  local commands = W.by_key[key]
  if not commands then
    commands = {}
    W.by_key[key] = commands
  end
  local args = commands[command]
  if not args then
    args = {}
    commands[command] = args
    W.order[#W.order + 1] = { command, key, args }
  end
  args[#args + 1] = a
  if b ~= nil then args[#args + 1] = b end
end

-- Send a batch's writes (nothing when none was queued) and empty it.
local function flush_writes(W)
  for _, entry in ipairs(W.order) do
    local command, key, args = entry[1], entry[2], entry[3]
    for first = 1, #args, CALL_CHUNK do
      redis.call(command, key, unpack(args, first, math.min(first + CALL_CHUNK - 1, #args)))
    end
  end
  W.order = {}
  W.by_key = {}
end

-- `command key args...` with a long list of values (even: whole pairs) in chunks; nothing
-- when `args` is empty.
local function call_chunked(command, key, args)
  for first = 1, #args, CALL_CHUNK do
    redis.call(command, key, unpack(args, first, math.min(first + CALL_CHUNK - 1, #args)))
  end
end

-- Without aging: higher priority first, FIFO within a priority. With aging (priority levels
-- gained per second of waiting), a job's effective priority is priority + aging * waited, so
-- it ranks as if queued priority / aging seconds earlier: the score is that virtual queue time
-- (ms since the queue's aging base, set when aging was turned on) times AGED_SEQUENCE_SPAN,
-- plus a sequence number for FIFO. Scores stay exact integers for about 99 days after the
-- base; later, jobs queued in the same millisecond may leave in any order.
local AGED_SEQUENCE_SPAN = 1048576
local function ready_score(priority, sequence, aging, now)
  if aging then
    local virtual_ms = math.floor(now - aging.base - priority * 1000 / aging.rate)
    return virtual_ms * AGED_SEQUENCE_SPAN + sequence % AGED_SEQUENCE_SPAN
  end
  return (PRIORITY_MAX - priority) * SEQUENCE_SPAN + sequence
end


-- A job record that is not a JSON object with the fields every call relies on decodes to
-- nil instead of raising, so one corrupt record cannot break a call that handles many jobs.
local KNOWN_STATUS = {
{%- for value in S.values() %}
  ['{{ value }}'] = true,
{%- endfor %}
}
-- Fields the library computes with: a record where one is not a number is corrupt.
local NUMBER_FIELDS = { attempts = true, lost = true, retries = true, backoff = true,
  result_ttl = true, timeout = true, time_slice = true, started = true, ended = true,
  created = true, queued_at = true, due = true, pauses = true, split = true, split_total = true,
  expires = true, deps_left = true }

-- Infinity, as a constant of the library (the `math` table is not reachable while it loads).
local HUGE = 1 / 0

-- Every number in a decoded value is finite (cjson decodes NaN and Infinity but cannot encode
-- them, which would fail a call halfway through its writes); nesting at most `depth` deep.
local function all_finite(value, depth)
  local kind = type(value)
  if kind == 'number' then return value == value and value ~= HUGE and value ~= -HUGE end
  if kind ~= 'table' then return true end
  if depth <= 0 then return false end
  for _, item in pairs(value) do
    if not all_finite(item, depth - 1) then return false end
  end
  return true
end

-- Split groups [[queue, count], ...] rebuilt from the decoded JSON (psq_enqueue, psq_split), and their total count, or
-- nil when malformed.
local function parse_groups(groups)
  if type(groups) ~= 'table' then return nil end
  local clean, total = {}, 0
  for n = 1, #groups do
    local group = groups[n]
    if type(group) ~= 'table' or not is_queue_name(group[1]) or type(group[2]) ~= 'number'
        or not all_finite(group[2], 0) or group[2] % 1 ~= 0 or group[2] < 1 then
      return nil
    end
    total = total + group[2]
    if total > SPLIT_TOTAL_MAX then return nil end
    clean[n] = { group[1], group[2] }
  end
  -- Any other key (a sparse or non-array table) would not survive the rebuild: refuse it.
  local entries = 0
  for _ in pairs(groups) do entries = entries + 1 end
  if entries ~= #groups then return nil end
  return clean, total
end

-- The states of a job psq_enqueue writes (a compact record has no attempts: none yet).
local NOT_YET_RUN = { [STATUS.QUEUED] = true, [STATUS.DELAYED] = true, [STATUS.WAITING] = true }

-- psq_enqueue's compact records leave out the fields at their default (RECORD_DEFAULTS of
-- pyscheduler/store/protocol.py); every reader fills them in here, so records written back
-- are whole again. One test per field, rendered: a loop over a table of defaults costs a call
-- of `next` per field, per job.
local function fill_defaults(job)
{%- for name, value in RECORD_DEFAULTS.items() %}
  if job.{{ name }} == nil then job.{{ name }} = {{ value | tojson }} end
{%- endfor %}
end

-- Copy to `record` the fields of RECORD_DEFAULTS that `job` holds at other values than their
-- defaults (a compact record leaves the defaults out); rendered as fill_defaults is.
local function copy_unless_default(job, record)
{%- for name, value in RECORD_DEFAULTS.items() %}
  if job.{{ name }} ~= {{ value | tojson }} then record.{{ name }} = job.{{ name }} end
{%- endfor %}
end

local function decode_job(raw)
  -- A local: the check of every field below calls it, and a global is looked up each time.
  local type = type
  if type(raw) ~= 'string' then return nil end
  local ok, job = pcall(cjson.decode, raw)
  if not ok or type(job) ~= 'table' then return nil end
  -- Before the checks: a queued job's record has no status.
  fill_defaults(job)
  local priority = job.priority
  -- A string `func` means the JSON was an object, so every key below is a string.
  if not KNOWN_STATUS[job.status] or type(job.func) ~= 'string'
      or type(priority) ~= 'number' or priority % 1 ~= 0 or priority < PRIORITY_MIN
      or priority > PRIORITY_MAX then
    return nil
  end
  -- Most fields are scalars: checked here rather than through all_finite, which every pop
  -- and completion would otherwise call once per field.
  for field, value in pairs(job) do
    local kind = type(value)
    if kind == 'number' then
      if value ~= value or value == HUGE or value == -HUGE then return nil end
    elseif NUMBER_FIELDS[field] or (kind == 'table' and not all_finite(value, 8)) then
      return nil
    end
  end
  if (job.rank ~= nil and type(job.rank) ~= 'string')
      or (job.rank_base ~= nil and type(job.rank_base) ~= 'string') then
    return nil
  end
  if job.lost == nil then job.lost = 0 end
  if job.attempts == nil and NOT_YET_RUN[job.status] then job.attempts = 0 end
  if job.queued_at == nil and job.status == STATUS.QUEUED then job.queued_at = job.created end
  return job
end

-- A record as the inspection calls show it: whole (decode_job), or as stored when corrupt.
local function shown_record(raw)
  local job = decode_job(raw)
  if job then return cjson.encode(job) end
  return raw
end

local function incr_stat(stats_key, field, amount)
  redis.call('HINCRBY', stats_key, field, amount or 1)
end

local function wake_workers(wake_key, count)
  if count <= 0 then return end
  local args = {}
  for i = 1, math.min(count, WAKE_TOKENS_MAX) do args[i] = '1' end
  redis.call('LPUSH', wake_key, unpack(args))
  redis.call('LTRIM', wake_key, 0, WAKE_TOKENS_MAX - 1)
end

-- The queue's aging rule from its `aging` and `aging_base` settings, or nil for none. A
-- setting written by hand that is not a positive number is ignored, not computed with.
local function aging_of(rate_text, base_text)
  local rate, base = tonumber(rate_text), tonumber(base_text) or 0
  if rate and rate > 0 and rate < math.huge and base == base and math.abs(base) < math.huge then
    return { rate = rate, base = base }
  end
  return nil
end

-- Put a job at the back of its priority in the ready set (uses Q.jobs, Q.ready, Q.seq, and
-- Q.config when the operation passes it, for the queue's aging rate). Its `queued_at` (where
-- its wait time starts) is `since` when given (a delayed job's due time), else now.
local function push_ready(Q, id, job, now, since)
  now = now or now_ms()
  job.status = STATUS.QUEUED
  job.due = nil
  job.queued_at = since or now
  redis.call('HSET', Q.jobs, id, cjson.encode(job))
  local sequence = redis.call('INCR', Q.seq)
  local aging
  if Q.config then
    local setting = redis.call('HMGET', Q.config, 'aging', 'aging_base')
    aging = aging_of(setting[1], setting[2])
  end
  redis.call('ZADD', Q.ready, int(ready_score(job.priority, sequence, aging, now)), id)
end

-- The queue's `aging_base` (the rule its ready-set scores were computed under), or nil.
local function aging_base_of(config_key)
  return redis.call('HGET', config_key, 'aging_base') or nil
end

-- Put a job that left `ready` (psq_pop) back at the score it was popped with, its record's
-- `rank`, so it goes ahead of the jobs of its priority queued after it, in its original order.
-- A record without a usable rank (none, or computed under another aging base than the queue's
-- `aging_base`, from aging_base_of) goes to the back of its priority instead (uses Q.jobs,
-- Q.ready, Q.seq, Q.config).
local function requeue_at_rank(Q, id, job, aging_base, now)
  -- The rank as Redis formatted it: a finite decimal score, or the job goes to the back.
  local score = as_number(job.rank, -math.huge, math.huge)
  if score and job.rank_base == aging_base then
    job.status = STATUS.QUEUED
    job.due = nil
    redis.call('HSET', Q.jobs, id, cjson.encode(job))
    redis.call('ZADD', Q.ready, job.rank, id)
  else
    job.rank = nil
    job.rank_base = nil
    push_ready(Q, id, job, now)
  end
end

-- A run that ended without failing (handed back unstarted, paused, waiting for its subtasks)
-- was not an attempt: the next run must not count against the job's retries.
local function undo_attempt(job)
  job.attempts = math.max(0, (job.attempts or 1) - 1)
end

-- A subtask's end, or the end of a job others depend on (its record's `dependents`), is
-- noted in its own queue until the parent's and the dependents' queues have recorded it
-- (Q.notices); the worker delivers it, and psq_stale_notices re-drives it after a crash.
-- With a batch `W` (new_writes) the write is queued there. A call that ends a job no worker
-- hears of (Q.untold: psq_pop expiring it or failing it for lost leases, psq_complete_many
-- refusing its result) stamps the notice NOTICE_REDRIVE_MS early: no worker will deliver it,
-- so the next re-drive should.
local function note_subtask_end(Q, id, job, now, W)
  if job.parent or type(job.dependents) == 'table' then
    local at = now
    if Q.untold then at = now - NOTICE_REDRIVE_MS end
    write(W, 'ZADD', Q.notices, int(at), id)
  end
end

-- Metrics (psq_metrics reads them), in the queue's `metrics` hash, and job events, in its
-- `events` stream: a call gathers what it saw in a tally (new_tally; observe adds a wait or
-- run time, note_event a job's event, fail_for_good a failure) and records it once at its end
-- (record_tally): one HMGET and one HSET of `metrics`, one XADD per kind of event. The metrics
-- fields are read and rewritten rather than incremented, so a field another writer spoiled is
-- reset instead of failing the call after its writes.
-- The `metrics` fields of the two histograms: '<name>:sum_ms', '<name>:count', and bucket i as
-- '<name>:<HISTOGRAM_BOUNDS_MS[i]>' ('<name>:inf' for the last), rendered once rather than
-- joined on every call.
local HISTOGRAM_FIELDS = {
{%- for name in ('wait', 'run') %}
  {{ name }} = { sum = '{{ name }}:sum_ms', count = '{{ name }}:count', buckets = {
  {%- for row in HISTOGRAM_BOUNDS_MS|batch(6) %}
    {% for bound in row %}'{{ name }}:{{ bound }}',{% if not loop.last %} {% endif %}{% endfor %}
  {%- endfor %}
    '{{ name }}:inf' } },
{%- endfor %}
}

-- Every field of histogram `name`: its buckets in order, then its sum and count.
local function histogram_fields(name)
  local names = HISTOGRAM_FIELDS[name]
  local fields = {}
  for i, field in ipairs(names.buckets) do fields[i] = field end
  fields[#fields + 1] = names.sum
  fields[#fields + 1] = names.count
  return fields
end

-- A histogram is made by the first observe of its name: most calls observe one kind or none.
local function new_tally()
  return { completed = 0, failed = 0, events = {} }
end

-- Note event `kind` (one of EVENT_KINDS) of job `id` in tally `T` (nothing without one).
local function note_event(T, kind, id)
  if not T then return end
  local ids = T.events[kind]
  if not ids then
    ids = {}
    T.events[kind] = ids
  end
  ids[#ids + 1] = id
end

-- One wait or run time (`name`) of `ms` milliseconds: it goes to the first bucket whose bound
-- is >= it. `times` -1 takes back one observed before (a wait psq_pop counted for a job
-- handed back unstarted).
local function observe(T, name, ms, times)
  times = times or 1
  if ms ~= ms or ms < 0 then ms = 0 end
  local h = T[name]
  if not h then
    h = { buckets = {}, sum = 0, count = 0 }
    T[name] = h
  end
  -- A binary search: a wait of a backlog would walk most of the bounds one by one, and
  -- every pop and completion observes once per job.
  local lo, hi = 1, HISTOGRAM_BUCKETS
  while lo < hi do
    local mid = (lo + hi - (lo + hi) % 2) / 2
    if ms > HISTOGRAM_BOUNDS_MS[mid] then lo = mid + 1 else hi = mid end
  end
  h.buckets[lo] = (h.buckets[lo] or 0) + times
  h.sum = h.sum + ms * times
  h.count = h.count + times
end

-- A stored count as a number (0 for anything else another writer left).
local function stored_count(value)
  local n = tonumber(value)
  if not n or n ~= n or n < 0 or n >= 2 ^ 53 then return 0 end
  return n - n % 1
end

-- Write the events of tally `T` to the stream `key`, EVENT_IDS_MAX ids per entry at most.
local function record_events(key, T)
  for _, kind in ipairs(EVENT_KINDS) do
    local ids = T.events[kind]
    if ids then
      for first = 1, #ids, EVENT_IDS_MAX do
        redis.call('XADD', key, 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'event', kind, 'ids',
          table.concat(ids, ' ', first, math.min(first + EVENT_IDS_MAX - 1, #ids)))
      end
    end
  end
end

-- Append the fields of histogram `h` (of HISTOGRAM_FIELDS `names`) and what to add to each.
local function histogram_changes(h, names, fields, add)
  local k = #fields
  fields[k + 1], add[k + 1] = names.sum, h.sum
  fields[k + 2], add[k + 2] = names.count, h.count
  k = k + 2
  for i, n in pairs(h.buckets) do
    k = k + 1
    fields[k], add[k] = names.buckets[i], n
  end
end

-- Record the call's tally Q.tally: its events in Q.events; in Q.metrics (when the call has
-- it) its histograms, and its completed and failed jobs in this minute's slot of the
-- throughput ring (a slot stamped with another minute is stale: it starts again from zero).
local function record_tally(Q, now)
  local T = Q.tally
  if Q.events and next(T.events) then record_events(Q.events, T) end
  local key = Q.metrics
  if not key then return end
  local fields, add = {}, {}
  if T.wait then histogram_changes(T.wait, HISTOGRAM_FIELDS.wait, fields, add) end
  if T.run then histogram_changes(T.run, HISTOGRAM_FIELDS.run, fields, add) end
  local minute = (now - now % 60000) / 60000
  local slot
  if T.completed + T.failed > 0 then
    slot = 'minute:' .. int(minute % THROUGHPUT_MINUTES)
    fields[#fields + 1] = slot
  end
  if #fields == 0 then return end
  local values = redis.call('HMGET', key, unpack(fields))
  local out = {}
  for n = 1, #add do
    -- Never below zero: a take-back may find the metrics reset since.
    local total = stored_count(values[n]) + add[n]
    out[2 * n - 1], out[2 * n] = fields[n], total > 0 and int(total) or '0'
  end
  if slot then
    local done, lost = 0, 0
    local stored = values[#fields]
    if stored then
      local at, c, f = string.match(stored, '^(%d+):(%d+):(%d+)$')
      if tonumber(at) == minute then done, lost = tonumber(c), tonumber(f) end
    end
    out[#out + 1] = slot
    out[#out + 1] = int(minute) .. ':' .. int(done + T.completed) .. ':' .. int(lost + T.failed)
  end
  redis.call('HSET', key, unpack(out))
end

-- The id of the job a callback (`which`: 'on_success' or 'on_failure') of job `id` runs as:
-- derived from the job, so it is enqueued once however often the outcome is recorded.
local function callback_id(id, which)
  local derived = id .. '.' .. which
  if #derived <= JOB_ID_MAX then return derived end
  return 'cb.' .. redis.sha1hex(id) .. '.' .. which
end

-- Enqueue job `id`'s callback `which` (its record's handler reference, when it has one) as an
-- ordinary ready job of this queue, called with (job id, `value`): `value` is JSON text (the
-- result, or the error text encoded). Atomic with the outcome that calls it. Needs Q.jobs,
-- Q.payloads, Q.ready, Q.seq, Q.stats, Q.wake (and Q.config for aging); a caller without
-- them (none today) enqueues nothing.
local function enqueue_callback(Q, id, job, which, value, now)
  local func = job[which]
  if type(func) ~= 'string' or not (Q.payloads and Q.ready and Q.seq and Q.wake) then return end
  local cb_id = callback_id(id, which)
  if redis.call('HEXISTS', Q.jobs, cb_id) == 1 then return end
  redis.call('HSET', Q.payloads, cb_id, '{"args":[' .. cjson.encode(id) .. ',' .. value .. '],"kwargs":{}}')
  push_ready(Q, cb_id, { func = func, priority = job.priority, created = now, payload = true }, now)
  incr_stat(Q.stats, 'enqueued')
  if Q.tally and is_job_id(id) then note_event(Q.tally, 'enqueued', cb_id) end
  wake_workers(Q.wake, 1)
end

-- The failed set keeps the job for inspection; the record stays until purged
-- (uses Q.jobs, Q.errors, Q.failed, Q.stats, Q.notices; counted in Q.tally when there is one).
local function fail_for_good(Q, id, job, now, reason)
  job.status = STATUS.FAILED
  job.ended = now
  redis.call('HSET', Q.jobs, id, cjson.encode(job))
  redis.call('HSET', Q.errors, id, reason)
  redis.call('ZADD', Q.failed, int(now), id)
  incr_stat(Q.stats, 'failed')
  if Q.tally then Q.tally.failed = Q.tally.failed + 1 end
  -- An id another writer put in a set unchecked would spoil the entry's list of ids.
  if is_job_id(id) then note_event(Q.tally, 'failed', id) end
  note_subtask_end(Q, id, job, now)
  enqueue_callback(Q, id, job, 'on_failure', cjson.encode(reason), now)
end

-- A record that cannot be decoded is moved to failed with the reason, raw text kept (uses
-- Q.errors, Q.failed, Q.stats; counted in Q.tally when there is one).
local function fail_corrupt(Q, id, now)
  redis.call('HSET', Q.errors, id, 'corrupt job record: not a JSON object with status, func and priority')
  redis.call('ZADD', Q.failed, int(now), id)
  incr_stat(Q.stats, 'failed')
  if Q.tally then Q.tally.failed = Q.tally.failed + 1 end
  -- An id another writer put in a set unchecked would spoil the entry's list of ids.
  if is_job_id(id) then note_event(Q.tally, 'failed', id) end
end

-- Drop the records of finished jobs whose result TTL has passed, a bounded batch per call:
-- SWEEP_BATCH, or `limit` when given (uses Q.finished, Q.jobs, Q.payloads, Q.results, Q.errors,
-- Q.checkpoints).
local function sweep_finished(Q, now, limit)
  local expired = redis.call('ZRANGEBYSCORE', Q.finished, '-inf', int(now), 'LIMIT', 0, limit or SWEEP_BATCH)
  if #expired == 0 then return end
  redis.call('ZREM', Q.finished, unpack(expired))
  for _, key in ipairs({ Q.jobs, Q.payloads, Q.results, Q.errors, Q.checkpoints }) do
    redis.call('HDEL', key, unpack(expired))
  end
end

-- Keep a finished job (complete or cancelled) until its result TTL passes; its subtask
-- outcomes (`subtasks_key`, may not exist) expire with it. With a batch `W` (new_writes) the
-- ZADD is queued there (the PEXPIRE, one key per job, is done at once).
local function keep_finished(finished_key, subtasks_key, id, job, now, W)
  local ttl_ms = math.floor((job.result_ttl or 0) * 1000)
  write(W, 'ZADD', finished_key, int(now + ttl_ms), id)
  if job.split then redis.call('PEXPIRE', subtasks_key, math.max(1, ttl_ms)) end
end

-- A job not started before its `expires` time ends expired: never run, counted, its reason in
-- Q.errors, kept until its result TTL passes like a cancelled one, its parent and dependents
-- told (uses Q.jobs, Q.errors, Q.finished, Q.stats, Q.notices; Q.tally when there is one). A
-- job that split is never expired (its subtasks key is not passed here).
local function expire_unstarted(Q, id, job, now)
  job.status = STATUS.EXPIRED
  job.ended = now
  redis.call('HSET', Q.jobs, id, cjson.encode(job))
  redis.call('HSET', Q.errors, id, 'JobExpired: not started before its expiry time ('
    .. int(job.expires) .. ' ms)')
  keep_finished(Q.finished, nil, id, job, now)
  incr_stat(Q.stats, 'expired')
  note_event(Q.tally, 'expired', id)
  note_subtask_end(Q, id, job, now)
end

-- Jobs left `active` under a concurrency limit: wake a worker per freed slot, `freed` of them
-- (default 1) (uses Q.config, Q.wake).
local function slot_freed(Q, freed)
  freed = freed or 1
  if freed <= 0 then return end
  if redis.call('HEXISTS', Q.config, 'concurrency') == 1 then wake_workers(Q.wake, freed) end
end

-- The job when `token` is the fencing token of its current lease, given its record as stored
-- (`raw`: false or nil when there is none); otherwise nil, an error code and a message. A job
-- that was reclaimed, finished or cancelled is no longer active, so its old token is refused
-- even before the next pop issues a new one.
local function check_lease(raw, id, token)
  if not raw then return nil, ERR.NOT_FOUND, 'job ' .. id .. ' does not exist' end
  local job = decode_job(raw)
  if not job or job.status ~= STATUS.ACTIVE or job.token ~= token then
    return nil, ERR.STALE_TOKEN, 'job ' .. id .. ': token ' .. token .. ' does not hold the lease'
  end
  return job
end

-- check_lease on the record in `jobs_key`.
local function job_under_lease(jobs_key, id, token)
  return check_lease(redis.call('HGET', jobs_key, id), id, token)
end

-- Finish a job whose lease the caller checked (check_lease): store its result, move it from
-- `active` to `finished` and note a subtask's end; returns its run time in ms (lease start to
-- `now`) and its new record. `subtasks_key` is the job's own subtask outcomes (may not exist).
-- With a batch `W` (new_writes) the writes are queued there for the caller's flush_writes. The
-- caller does the once-per-call work: count it in stats, sweep_finished (after the flush) and
-- slot_freed (uses Q.jobs, Q.results, Q.active, Q.finished, Q.notices).
local function complete_leased(Q, subtasks_key, id, job, result, now, W)
  job.status = STATUS.COMPLETE
  job.ended = now
  local record = cjson.encode(job)
  write(W, 'HSET', Q.jobs, id, record)
  write(W, 'HSET', Q.results, id, result)
  write(W, 'ZREM', Q.active, id)
  keep_finished(Q.finished, subtasks_key, id, job, now, W)
  note_subtask_end(Q, id, job, now, W)
  enqueue_callback(Q, id, job, 'on_success', result, now)
  return now - (job.started or now), record
end
