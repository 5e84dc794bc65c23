-- destination_resume.lua: an operator ends a destination's cool-down. Prepended with
-- record.lua and destination.lua.
--
-- KEYS[1]  the destination's in-flight ZSET     KEYS[2]  its parked ZSET
-- KEYS[3]  its state HASH                       KEYS[4]  the cooling index ZSET
-- KEYS[5]  the webhook queue's ready list       KEYS[6]  its scheduled ZSET
-- KEYS[7]  its wake-up list
-- ARGV[1]  record key prefix                    ARGV[2]  the destination's digest
-- ARGV[3]  most deliveries in flight when the state names none (its `max` field wins)
--
-- Returns {resumed, moved}: resumed 1 when the destination was cooling down (its failures,
-- gap and probe are cleared, it leaves the index), 0 when it was not (nothing changed);
-- moved: parked jobs moved to the ready list, filling the free slots.

local now = clock_ms()
local state = redis.call('HMGET', KEYS[3], 'until', 'max')
if not state[1] then
  redis.call('ZREM', KEYS[4], ARGV[2])
  return {0, 0}
end
redis.call('HDEL', KEYS[3], 'failures', 'until', 'gap', 'probe', 'since')
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local max = tonumber(state[2] or ARGV[3])
local moved = wake_parked(KEYS[2], KEYS[5], KEYS[6], KEYS[7], ARGV[1], max - redis.call('ZCARD', KEYS[1]), now)
return {1, moved}
