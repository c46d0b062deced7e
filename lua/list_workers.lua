--[[ psq_list_workers: one page of the live workers of a queue, with their records (read-only).

Pages go through the live entries in the order of their expiry, from an offset. A worker that
sends a heartbeat while the pages are read moves to the end: it may be listed twice (the caller
keeps one) and the worker after it missed on that read. A page holds WORKERS_PAGE_MAX workers,
more than most queues have, so most reads are one page.

KEYS[1] workers      ZSET  worker name -> heartbeat expiry (ms, server clock)
KEYS[2] worker_info  HASH  worker name -> worker record (JSON, see psq_heartbeat)

ARGV[1] cursor  string   decimal 0..2^53-1, no leading zeros: '0' for the first page, then
                         the cursor returned (the offset of the next page)
ARGV[2] count   integer  1..WORKERS_PAGE_MAX, workers per page

Returns: { next cursor ('0' after the last page), the server's clock (ms), then for each live
  worker (expiry after now) of the page: name, expiry (ms), record (JSON, as stored) }
Errors: BAD_KEYS; BAD_ARGUMENT.
]]

local WORKERS_PAGE_MAX = {{ WORKERS_PAGE_MAX }}
-- An offset stays an exact integer in a double below 2^53.
local CURSOR_MAX = '9007199254740991'

local function is_cursor(text)
  return type(text) == 'string' and (text == '0' or text:find('^[1-9]%d*$') ~= nil)
    and (#text < #CURSOR_MAX or (#text == #CURSOR_MAX and text <= CURSOR_MAX))
end

local function list_workers(KEYS, ARGV)
  local refused = check_keys(KEYS, 'psq_list_workers')
  if refused then return refused end
  local count = as_int(ARGV[2], 1, WORKERS_PAGE_MAX)
  if #ARGV ~= 2 or not is_cursor(ARGV[1]) or not count then
    return bad_argument('pass a cursor (a decimal in 0..' .. CURSOR_MAX .. ') and count in 1..'
      .. WORKERS_PAGE_MAX)
  end
  local now = now_ms()
  local offset = tonumber(ARGV[1])
  local page = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. int(now), '+inf', 'WITHSCORES',
    'LIMIT', int(offset), count)
  local names = {}
  for i = 1, #page, 2 do names[#names + 1] = page[i] end
  local records = hmget_many(KEYS[2], names)
  local reply = { #names < count and '0' or int(offset + count), now }
  for n, name in ipairs(names) do
    if records[n] then
      reply[#reply + 1] = name
      reply[#reply + 1] = tonumber(page[2 * n])
      reply[#reply + 1] = records[n]
    end
  end
  return reply
end

redis.register_function { function_name = 'psq_list_workers', callback = list_workers,
  flags = { 'no-writes' } }
