-- forget.lua: delete dead letters of one queue, each only while it is still a dead letter, so
-- a job replayed meanwhile (queued again under its id) is never deleted.
--
-- KEYS[1]  the queue's dead set (each producer's dead set is "<KEYS[1]>:by:<producer>")
-- ARGV[1]  record key prefix ("<prefix>:<id>")
-- ARGV[2..] ids
--
-- Returns how many were deleted.

local deleted = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local key = ARGV[1] .. ':' .. id
  local record = load_record(key)
  if record and is_dead_letter(record) and redis.call('ZREM', KEYS[1], id) == 1 then
    redis.call('ZREM', KEYS[1] .. ':by:' .. (record.pr or ''), id)
    redis.call('DEL', key)
    deleted = deleted + 1
  end
end
return deleted
