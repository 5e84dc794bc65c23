-- schedule_settle.lua: after a scheduler looked at a due schedule, record the tick it fired
-- or skipped (only forward) and when to look again, only while the stored schedule is still
-- the definition it looked at (same updated_at): a tick of a deleted or replaced schedule
-- never moves the new one's clock.
--
-- KEYS[1]  definitions hash
-- KEYS[2]  last fired tick hash
-- KEYS[3]  next-fire sorted set
-- KEYS[4]  paused hash: a paused schedule's tick is recorded, but its next-fire time is left
--          parked (the pause's)
-- ARGV[1]  name
-- ARGV[2]  the definition's updated_at, as stored
-- ARGV[3]  the tick fired or skipped, ms ("" = none)
-- ARGV[4]  when to look at it next, ms
--
-- Returns 1 if recorded, 0 if the definition is gone or another.

local def = redis.call('HGET', KEYS[1], ARGV[1])
if not def then return 0 end
local ok, parsed = pcall(cjson.decode, def)
if not ok or type(parsed) ~= 'table' or parsed.updated_at ~= ARGV[2] then return 0 end
if ARGV[3] ~= '' then
  local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
  if tonumber(ARGV[3]) > last then
    redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
  end
end
if redis.call('HEXISTS', KEYS[4], ARGV[1]) == 0 then
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
end
return 1
