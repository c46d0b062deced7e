-- Periodic jobs: the helpers psq_pop runs due ticks with, and the checks the schedule
-- operations share. Rendered once, after _helpers.lua (library.lua.j2).
--
-- A schedule is a field of the queue's `schedules` hash (name -> definition JSON) and, unless
-- paused, a member of its `ticks` zset scored with its next tick (ms, server clock). An
-- `every` schedule keeps its next tick in `next` and steps by `every_ms`; a cron schedule keeps
-- the next tick times in `ticks` (ascending, computed in Python with croniter in its zone, so
-- daylight-saving changes follow the zone), and a run made when fewer than SCHEDULE_REFILL_AT
-- remain carries `refill` in its record: the worker that leases it computes more
-- (psq_refill_schedule). Each run is an ordinary job with id `schedule:<name>:<tick ms>`, made
-- once: a tick leaves `ticks` in the same atomic call that makes its job.

local SCHEDULES_MAX = {{ SCHEDULES_MAX }}
local SCHEDULE_FIRE_BATCH = {{ SCHEDULE_FIRE_BATCH }}
local SCHEDULE_CATCH_UP_MAX = {{ SCHEDULE_CATCH_UP_MAX }}
local SCHEDULE_REFILL_AT = {{ SCHEDULE_REFILL_AT }}
local SCHEDULE_TICKS_MAX = {{ SCHEDULE_TICKS_MAX }}
local SCHEDULE_EVERY_MS_MIN = {{ SCHEDULE_EVERY_MS_MIN }}
local SCHEDULE_SPEC_MAX_BYTES = {{ SCHEDULE_SPEC_MAX_BYTES }}

-- The job id of schedule `name`'s run for `tick`.
local function schedule_job_id(name, tick)
  return 'schedule:' .. name .. ':' .. int(tick)
end

-- A tick time: an integer number of ms in 0..2^53.
local function is_tick(value)
  return type(value) == 'number' and all_finite(value, 0) and value % 1 == 0 and value >= 0
    and value < 2 ^ 53
end

-- A list of tick times, ascending and at most SCHEDULE_TICKS_MAX long (cjson decodes an empty
-- list written as {} the same way).
local function is_tick_list(list)
  if type(list) ~= 'table' then return false end
  local n, previous = 0, -1
  for _ in pairs(list) do n = n + 1 end
  if n ~= #list or n > SCHEDULE_TICKS_MAX then return false end
  for i = 1, n do
    if not is_tick(list[i]) or list[i] <= previous then return false end
    previous = list[i]
  end
  return true
end

-- A short text without control characters (a cron expression, a zone name).
local function is_spec_text(value)
  return type(value) == 'string' and #value >= 1 and #value <= SCHEDULE_SPEC_MAX_BYTES
    and not value:find('%c')
end

-- What is wrong with the job part of a definition (func, payload and the job options), or nil.
local function schedule_job_problem(def)
  if type(def.func) ~= 'string' or #def.func < 1 or #def.func > FUNC_MAX_BYTES then
    return 'func must be 1..' .. FUNC_MAX_BYTES .. ' bytes'
  end
  -- psq_schedule checks that the payload is JSON; runs pass it on as the worker checks it.
  if def.payload ~= nil and (type(def.payload) ~= 'string' or def.payload == '') then
    return 'payload must be JSON text'
  end
  if type(def.priority) ~= 'number' or def.priority % 1 ~= 0 or def.priority < PRIORITY_MIN
      or def.priority > PRIORITY_MAX then
    return 'priority must be an integer in ' .. PRIORITY_MIN .. '..' .. PRIORITY_MAX
  end
  for _, field in ipairs({ 'timeout', 'backoff', 'result_ttl', 'time_slice' }) do
    local v = def[field]
    if type(v) ~= 'number' or not all_finite(v, 0) or v < 0 or v > TIME_S_MAX then
      return field .. ' must be a number of seconds in 0..' .. TIME_S_MAX
    end
  end
  if def.timeout <= 0 then return 'timeout must be positive' end
  if type(def.retries) ~= 'number' or def.retries % 1 ~= 0 or def.retries < 0 or def.retries > RETRIES_MAX then
    return 'retries must be an integer in 0..' .. RETRIES_MAX
  end
  return nil
end

-- What is wrong with a whole stored definition, or nil.
local function schedule_problem(def)
  if type(def) ~= 'table' then return 'not a JSON object' end
  local problem = schedule_job_problem(def)
  if problem then return problem end
  if type(def.catch_up) ~= 'boolean' or type(def.paused) ~= 'boolean' then
    return 'catch_up and paused must be true or false'
  end
  if def.last ~= nil and not is_tick(def.last) then return 'last must be a tick time' end
  if def.every_ms ~= nil then
    if not is_tick(def.every_ms) or def.every_ms < SCHEDULE_EVERY_MS_MIN or def.every_ms > DELAY_MS_MAX
        or not is_tick(def.next) then
      return 'every_ms must be an integer in ' .. SCHEDULE_EVERY_MS_MIN .. '..' .. DELAY_MS_MAX
        .. ' with a next tick'
    end
  elseif not is_spec_text(def.cron) or not is_spec_text(def.tz) or not is_tick_list(def.ticks) then
    return 'give every_ms, or cron and tz with an ascending list of at most ' .. SCHEDULE_TICKS_MAX
      .. ' tick times'
  end
  return nil
end

-- The stored definition of a schedule decoded, or nil when it is corrupt.
local function decode_schedule(raw)
  if type(raw) ~= 'string' then return nil end
  local ok, def = pcall(cjson.decode, raw)
  if not ok or schedule_problem(def) then return nil end
  return def
end

-- cjson writes an empty list as {}; is_tick_list takes that for the empty list it is.
local function encode_schedule(def)
  return cjson.encode(def)
end

-- A schedule's next tick, or nil when it has none (a cron schedule waiting for a refill).
local function next_tick_of(def)
  if def.every_ms then return def.next end
  return def.ticks[1]
end

-- Put a schedule's next tick in Q.ticks (or take it out: paused, or no tick known). With
-- Q.wake, a worker is woken: an idle one waits only for what its last pop told it, so one
-- must pop again to learn of the tick (as for a delayed job).
local function place_schedule(Q, name, def)
  local tick = not def.paused and next_tick_of(def)
  if tick then
    redis.call('ZADD', Q.ticks, int(tick), name)
    if Q.wake then wake_workers(Q.wake, 1) end
  else
    redis.call('ZREM', Q.ticks, name)
  end
end

-- The ticks of `def` due at `now` to run (at most `budget`), advancing `def` past them.
local function take_due_ticks(def, now, budget)
  local runs = {}
  if def.every_ms then
    local every, first = def.every_ms, def.next
    local missed = math.floor((now - first) / every) + 1
    if missed < 1 then return runs end
    local skip, take = missed - 1, 1
    if def.catch_up then
      skip = math.max(0, missed - SCHEDULE_CATCH_UP_MAX)
      take = math.min(missed - skip, budget)
    end
    for i = 0, take - 1 do runs[#runs + 1] = first + (skip + i) * every end
    def.next = first + (skip + take) * every
    return runs
  end
  local ticks, due = def.ticks, 0
  while due < #ticks and ticks[due + 1] <= now do due = due + 1 end
  if due == 0 then return runs end
  local skip, take = due - 1, 1
  if def.catch_up then
    skip = math.max(0, due - SCHEDULE_CATCH_UP_MAX)
    take = math.min(due - skip, budget)
  end
  for i = skip + 1, skip + take do runs[#runs + 1] = ticks[i] end
  local rest = {}
  for i = skip + take + 1, #ticks do rest[#rest + 1] = ticks[i] end
  def.ticks = rest
  return runs
end

-- Make the run of schedule `name` for `tick` an ordinary ready job (uses Q.jobs, Q.payloads,
-- Q.ready, Q.seq, Q.stats, Q.config); false when that run exists already.
local function make_schedule_run(Q, name, def, tick, refill, now)
  local id = schedule_job_id(name, tick)
  if redis.call('HEXISTS', Q.jobs, id) == 1 then return false end
  local job = { func = def.func, priority = def.priority, created = now, schedule = name, tick = tick }
  copy_unless_default(def, job)
  if def.time_slice > 0 then job.time_slice = def.time_slice end
  if def.payload then
    job.payload = true
    redis.call('HSET', Q.payloads, id, def.payload)
  end
  if refill then job.refill = true end
  -- Its wait starts at its tick: the metrics show how late a run started.
  push_ready(Q, id, job, now, math.min(tick, now))
  incr_stat(Q.stats, 'enqueued')
  note_event(Q.tally, 'enqueued', id)
  return true
end

-- psq_pop's step: run the queue's due ticks, at most SCHEDULE_FIRE_BATCH runs per call (uses
-- Q.schedules, Q.ticks, Q.wake and what make_schedule_run uses). A queue without schedules pays
-- one ZRANGE of an empty key. Returns the next tick (ms; <= now when more are due than one
-- call runs), or nil when the queue has none.
local function run_due_ticks(Q, now)
  local first = redis.call('ZRANGE', Q.ticks, 0, 0, 'WITHSCORES')
  if not first[1] then return nil end
  local soonest = tonumber(first[2])
  if soonest > now then return soonest end
  local names = redis.call('ZRANGEBYSCORE', Q.ticks, '-inf', int(now), 'LIMIT', 0, SCHEDULE_FIRE_BATCH)
  local defs = hmget_many(Q.schedules, names)
  local made = 0
  for n, name in ipairs(names) do
    if made >= SCHEDULE_FIRE_BATCH then break end
    local def = decode_schedule(defs[n])
    if not def or def.paused then
      -- Corrupt (kept for inspection: psq_list_schedules shows it) or paused: no ticks.
      redis.call('ZREM', Q.ticks, name)
    else
      local runs = take_due_ticks(def, now, SCHEDULE_FIRE_BATCH - made)
      local refill = def.ticks ~= nil and #def.ticks < SCHEDULE_REFILL_AT
      for i, tick in ipairs(runs) do
        if make_schedule_run(Q, name, def, tick, refill and i == #runs, now) then made = made + 1 end
        def.last = tick
      end
      redis.call('HSET', Q.schedules, name, encode_schedule(def))
      place_schedule({ ticks = Q.ticks }, name, def)
    end
  end
  -- A wake-up per run, and one more: the popping worker takes its runs (and their tokens);
  -- the token left wakes another idle worker, whose pop then times the next tick too, so a
  -- worker busy with this run does not leave the next tick to no one.
  if made > 0 then wake_workers(Q.wake, made + 1) end
  local after = redis.call('ZRANGE', Q.ticks, 0, 0, 'WITHSCORES')
  return after[2] and tonumber(after[2]) or nil
end
