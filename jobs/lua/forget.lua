-- forget.lua: delete dead letters of one queue, each only while it is still a dead letter, so
-- a job replayed meanwhile (queued again under its id) is never deleted.
--
-- KEYS[1]  the queue's dead set (each producer's dead set is "<KEYS[1]>:by:<producer>")
-- ARGV[1]  job-hash key prefix ("<prefix>:<id>"; attempts list "<prefix>:<id>:attempts")
-- ARGV[2..] ids
--
-- Returns how many were deleted.

local deleted = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local key = ARGV[1] .. ':' .. id
  local status = redis.call('HGET', key, 'status')
  if (status == 'dead' or status == 'expired') and redis.call('ZREM', KEYS[1], id) == 1 then
    redis.call('ZREM', KEYS[1] .. ':by:' .. (redis.call('HGET', key, 'producer') or ''), id)
    redis.call('DEL', key, key .. ':attempts')
    deleted = deleted + 1
  end
end
return deleted
