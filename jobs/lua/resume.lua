-- resume.lua: end a queue's pause and wake its idle workers, atomically.
--
-- KEYS[1]  the queue's pause marker (`QueueKeys::paused`)
-- KEYS[2]  the queue's wake-up list (`QueueKeys::wake`)
-- ARGV[1]  wake-up markers to push: as many as idle workers may wait (the list keeps 16)
--
-- Returns 1 when the queue was paused, 0 when it was not (nothing is written then).
--
-- A paused worker looks again every few hundred ms anyway; the markers make every idle worker
-- of the queue fetch at once, as `enqueue.lua`'s do for a new job.

if redis.call('DEL', KEYS[1]) == 0 then
  return 0
end
local markers = math.min(tonumber(ARGV[1]), 16)
for _ = 1, markers do
  redis.call('LPUSH', KEYS[2], '1')
end
redis.call('LTRIM', KEYS[2], 0, 15)
return 1
