-- schedule_pause.lua: pause one schedule, owner-checked: from this call on, no claim takes it
-- (it is parked in the next-fire set, and the claim skips any paused schedule it meets), so
-- it fires nothing until resumed. Pausing a paused schedule changes nothing. The pause lives
-- with the schedule in Redis: it survives restarts, and a replacement of the definition (the
-- API's, or SCHEDULES_FILE's at a worker's start) keeps it. (schedule_index.lua is prepended.)
--
-- The caller then writes the returned time into every queue's pause hash (the fence
-- `enqueue.lua` checks), so a tick claimed before this call is refused too.
--
-- KEYS[1..7]  as in schedule_index.lua (definitions, last, next-fire, owners, counts, by-owner,
--             paused)
-- ARGV[1]     name
-- ARGV[2]     the caller: "api:<producer>" (its own schedules only) or "" (an operator: any)
-- ARGV[3]     who pauses, as recorded ("api:<producer>", "console:<operator>")
--
-- Returns {"paused", pause JSON, 1 if this call paused it or 0 if it already was}, or, nothing
-- changed: {"missing"}, {"taken"} (another producer's), {"from_file"} (SCHEDULES_FILE's, and
-- the caller is a producer).

ensure_index()
local name = ARGV[1]
local current = redis.call('HGET', KEYS[4], name)
if not current then return {'missing'} end
if ARGV[2] ~= '' and current ~= ARGV[2] then
  if current == 'file' then return {'from_file'} end
  return {'taken'}
end
local held = redis.call('HGET', KEYS[7], name)
if held then return {'paused', held, 0} end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local pause = cjson.encode({at = now, by = ARGV[3]})
redis.call('HSET', KEYS[7], name, pause)
redis.call('ZADD', KEYS[3], 'XX', PARKED, name)
return {'paused', pause, 1}
