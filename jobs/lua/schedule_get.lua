-- schedule_get.lua: one schedule, and the time by Redis's clock (the clock every scheduler
-- judges ticks by), in one read.
--
-- KEYS[1]  definitions hash
-- KEYS[2]  last fired tick hash
-- KEYS[3]  paused hash
-- ARGV[1]  name
--
-- Returns {definition JSON or nil, last fired tick ms or nil, pause JSON or nil, now ms}.

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
return {redis.call('HGET', KEYS[1], ARGV[1]), redis.call('HGET', KEYS[2], ARGV[1]),
  redis.call('HGET', KEYS[3], ARGV[1]), now}
