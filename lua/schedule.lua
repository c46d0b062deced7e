--[[ psq_schedule: define a periodic job of a queue, or replace the schedule of that name.

Each tick of the schedule becomes an ordinary job (psq_pop makes it, see _schedules.lua). A
schedule redefined with the same timing (the same every_ms, or the same cron and tz) keeps its
next tick, the ticks it ran and its paused state, so an application that defines its
schedules at every start neither runs a tick twice nor shifts an `every` schedule; with other
timing it starts afresh. The job part (func, payload, options, catch_up) is replaced.

KEYS[1] schedules  HASH  schedule name -> definition (JSON)
KEYS[2] ticks      ZSET  schedule name -> next tick (ms)
KEYS[3] config     HASH  queue settings (max_payload_bytes)
KEYS[4] wake       LIST  wake-up tokens for idle workers (one is pushed: a worker
                         pops and learns of the next tick)

ARGV[1] name        string  the schedule's name: 1..QUEUE_NAME_MAX letters, digits and _.-
                            starting with a letter or digit (QUEUE_NAME_PATTERN)
ARGV[2] definition  string  JSON object: func (1..FUNC_MAX_BYTES bytes), payload (JSON text of
                            {"args", "kwargs"} at most the queue's max_payload_bytes, or
                            absent), priority (integer PRIORITY_MIN..PRIORITY_MAX), timeout (>0),
                            backoff, result_ttl, time_slice (seconds, 0..TIME_S_MAX), retries
                            (integer 0..RETRIES_MAX), catch_up (boolean); and either every_ms
                            (integer SCHEDULE_EVERY_MS_MIN..DELAY_MS_MAX: the first tick is
                            every_ms from now) or cron and tz (texts of 1..SCHEDULE_SPEC_MAX_BYTES
                            bytes, shown and compared only) with ticks, the next tick times (ms,
                            ascending integers, at most SCHEDULE_TICKS_MAX; those not after now
                            are dropped)

Returns: { 1 when created or 0 when it replaced one, its next tick in ms or -1 when it has
  none (paused, or a cron schedule given no future tick) }
Errors (nothing is changed): BAD_KEYS; BAD_ARGUMENT; TOO_LARGE (a payload over the queue's
  max_payload_bytes); BAD_STATE when the queue has SCHEDULES_MAX schedules already.
]]

local function schedule(KEYS, ARGV)
  local Q = { schedules = KEYS[1], ticks = KEYS[2], config = KEYS[3], wake = KEYS[4] }
  local refused = check_keys(KEYS, 'psq_schedule')
  if refused then return refused end
  if #ARGV ~= 2 then return bad_argument('pass a name and a definition') end
  local name, text = ARGV[1], ARGV[2]
  if not is_queue_name(name) then
    return bad_argument('the schedule name must be 1..' .. QUEUE_NAME_MAX .. ' letters, digits and _.-'
      .. ' starting with a letter or digit')
  end
  local ok, given = pcall(cjson.decode, text)
  if not ok or type(given) ~= 'table' then return bad_argument('the definition must be a JSON object') end
  local def = {
    func = given.func, payload = given.payload, priority = given.priority, timeout = given.timeout,
    retries = given.retries, backoff = given.backoff, result_ttl = given.result_ttl,
    time_slice = given.time_slice, catch_up = given.catch_up, paused = false,
  }
  local now = now_ms()
  if given.every_ms ~= nil then
    if given.cron ~= nil or given.ticks ~= nil then return bad_argument('give every_ms or cron, not both') end
    def.every_ms = given.every_ms
    def.next = is_tick(given.every_ms) and now + given.every_ms or nil
  else
    def.cron, def.tz = given.cron, given.tz
    if is_tick_list(given.ticks) then
      def.ticks = {}
      for _, tick in ipairs(given.ticks) do
        if tick > now then def.ticks[#def.ticks + 1] = tick end
      end
    end
  end
  local problem = schedule_problem(def)
  if problem then return bad_argument('schedule ' .. name .. ': ' .. problem) end
  if def.payload ~= nil then
    if not is_json(def.payload) then return bad_argument('schedule ' .. name .. ': payload must be JSON text') end
    local limit = size_limit(Q.config, 'max_payload_bytes')
    if #def.payload > limit then
      return error_reply(ERR.TOO_LARGE, 'schedule ' .. name .. ': payload of ' .. #def.payload
        .. ' bytes exceeds the limit of ' .. limit .. ' bytes (max_payload_bytes)')
    end
  end

  local stored = redis.call('HGET', Q.schedules, name)
  local old, exists = decode_schedule(stored), stored ~= false
  if not exists and redis.call('HLEN', Q.schedules) >= SCHEDULES_MAX then
    return error_reply(ERR.BAD_STATE, 'the queue has ' .. SCHEDULES_MAX .. ' schedules already')
  end
  if old and ((def.every_ms and old.every_ms == def.every_ms)
      or (def.cron and old.cron == def.cron and old.tz == def.tz)) then
    -- The same timing: keep where the schedule is in it.
    def.next, def.last, def.paused = old.next, old.last, old.paused
    if def.ticks then
      local merged = {}
      for _, tick in ipairs(old.ticks) do
        if tick > (old.last or -1) then merged[#merged + 1] = tick end
      end
      -- Ticks already due wait for psq_pop (catch-up); the new list follows the old one.
      local last_kept = merged[#merged] or -1
      for _, tick in ipairs(def.ticks) do
        if tick > last_kept and #merged < SCHEDULE_TICKS_MAX then merged[#merged + 1] = tick end
      end
      def.ticks = merged
    end
  end
  def.created = old and old.created or now
  def.updated = now
  redis.call('HSET', Q.schedules, name, cjson.encode(def))
  place_schedule(Q, name, def)
  local tick = not def.paused and next_tick_of(def)
  return { exists and 0 or 1, tick or -1 }
end

redis.register_function('psq_schedule', schedule)
