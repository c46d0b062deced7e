--[[ psq_pause_schedule: pause a queue's schedule, or resume it.

A paused schedule makes no runs; its ticks pass unrun (resuming does not catch them up: an
`every` schedule goes on with its next tick after now, a cron schedule with its next listed
tick after now).

KEYS[1] schedules  HASH  schedule name -> definition (JSON)
KEYS[2] ticks      ZSET  schedule name -> next tick (ms)
KEYS[3] wake       LIST  wake-up tokens for idle workers (one is pushed: a worker
                         pops and learns of the next tick)

ARGV[1] name    string  the schedule's name (QUEUE_NAME_PATTERN)
ARGV[2] paused  string  '1' to pause, '0' to resume

Returns: the schedule's next tick in ms, or -1 when it has none (paused, or a cron schedule
  whose listed ticks have all passed: psq_refill_schedule gives it more).
Errors (nothing is changed): BAD_KEYS; BAD_ARGUMENT; NOT_FOUND when there is no such schedule;
  BAD_STATE when its stored definition is corrupt.
]]

local function pause_schedule(KEYS, ARGV)
  local Q = { schedules = KEYS[1], ticks = KEYS[2], wake = KEYS[3] }
  local refused = check_keys(KEYS, 'psq_pause_schedule')
  if refused then return refused end
  local name, paused = ARGV[1], ARGV[2]
  if #ARGV ~= 2 or not is_queue_name(name) or (paused ~= '1' and paused ~= '0') then
    return bad_argument("pass a schedule name and '1' (pause) or '0' (resume)")
  end
  local raw = redis.call('HGET', Q.schedules, name)
  if not raw then return error_reply(ERR.NOT_FOUND, 'schedule ' .. name .. ' does not exist') end
  local def = decode_schedule(raw)
  if not def then return error_reply(ERR.BAD_STATE, 'schedule ' .. name .. ' is corrupt: define it again') end
  def.paused = paused == '1'
  if not def.paused then
    local now = now_ms()
    if def.every_ms then
      if def.next <= now then
        def.next = def.next + (math.floor((now - def.next) / def.every_ms) + 1) * def.every_ms
      end
    else
      local rest = {}
      for _, tick in ipairs(def.ticks) do
        if tick > now then rest[#rest + 1] = tick end
      end
      def.ticks = rest
    end
  end
  redis.call('HSET', Q.schedules, name, cjson.encode(def))
  place_schedule(Q, name, def)
  return (not def.paused and next_tick_of(def)) or -1
end

redis.register_function('psq_pause_schedule', pause_schedule)
