-- schedule_fence.lua: one queue's fence of schedule pauses (the hash `enqueue.lua` checks for a
-- schedule's regular tick), in that queue's slot.
--
-- KEYS[1]  the queue's hash of schedule pauses: name -> when the pause was taken, ms
-- ARGV[1]  "pause": record ARGV[3] unless a later pause is recorded (pauses and resumes that
--          race leave the latest); "clear": delete the entry if it is older than ARGV[3] (the
--          schedule's delete), leaving a later pause's
-- ARGV[2]  name
-- ARGV[3]  ms
--
-- Returns 1 if it wrote, 0 if not.

local held = tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '-1')
local at = tonumber(ARGV[3])
if ARGV[1] == 'pause' then
  if held >= at then return 0 end
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  return 1
end
if held >= 0 and held < at then
  redis.call('HDEL', KEYS[1], ARGV[2])
  return 1
end
return 0
