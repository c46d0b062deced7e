--[[ psq_refill_schedule: add tick times to a cron schedule's list (computed in Python).

A tick already run (at or before the definition's `last`) or already listed is skipped, so
two workers refilling at once, or a refill racing psq_pop, add each tick once. A refill
computed for other timing (the schedule was redefined meanwhile) changes nothing.

KEYS[1] schedules  HASH  schedule name -> definition (JSON)
KEYS[2] ticks      ZSET  schedule name -> next tick (ms)
KEYS[3] wake       LIST  wake-up tokens for idle workers (one is pushed: a worker
                         pops and learns of the next tick)

ARGV[1] name   string  the schedule's name (QUEUE_NAME_PATTERN)
ARGV[2] cron   string  the cron expression the ticks were computed for
ARGV[3] tz     string  the zone they were computed in
ARGV[4] ticks  string  JSON list of tick times (ms, ascending integers, at most
                       SCHEDULE_TICKS_MAX); the list kept holds at most SCHEDULE_CATCH_UP_MAX
                       past ticks (the latest) and SCHEDULE_TICKS_MAX in all

Returns: the number of ticks now listed, or -1 when the schedule is gone or has other timing.
Errors (nothing is changed): BAD_KEYS; BAD_ARGUMENT.
]]

local function refill_schedule(KEYS, ARGV)
  local Q = { schedules = KEYS[1], ticks = KEYS[2], wake = KEYS[3] }
  local refused = check_keys(KEYS, 'psq_refill_schedule')
  if refused then return refused end
  if #ARGV ~= 4 or not is_queue_name(ARGV[1]) then
    return bad_argument('pass a schedule name, its cron expression, its zone and a list of ticks')
  end
  local ok, given = pcall(cjson.decode, ARGV[4])
  if not ok or not is_tick_list(given) then
    return bad_argument('ticks must be a JSON list of at most ' .. SCHEDULE_TICKS_MAX
      .. ' ascending integer tick times')
  end
  local name = ARGV[1]
  local def = decode_schedule(redis.call('HGET', Q.schedules, name))
  if not def or def.every_ms or def.cron ~= ARGV[2] or def.tz ~= ARGV[3] then return -1 end
  local listed, seen = {}, {}
  for _, tick in ipairs(def.ticks) do
    listed[#listed + 1] = tick
    seen[tick] = true
  end
  for _, tick in ipairs(given) do
    if not seen[tick] and tick > (def.last or -1) then listed[#listed + 1] = tick end
  end
  table.sort(listed)
  -- Past ticks wait for psq_pop's catch-up, which runs at most SCHEDULE_CATCH_UP_MAX of them:
  -- keep the latest of those, then the future ones up to SCHEDULE_TICKS_MAX in all.
  local now, past = now_ms(), 0
  while past < #listed and listed[past + 1] <= now do past = past + 1 end
  local kept = {}
  for i = math.max(1, past - SCHEDULE_CATCH_UP_MAX + 1), #listed do
    if #kept >= SCHEDULE_TICKS_MAX then break end
    kept[#kept + 1] = listed[i]
  end
  def.ticks = kept
  redis.call('HSET', Q.schedules, name, cjson.encode(def))
  place_schedule(Q, name, def)
  return #kept
end

redis.register_function('psq_refill_schedule', refill_schedule)
