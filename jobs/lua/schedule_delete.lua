-- schedule_delete.lua: delete one schedule if the caller owns it. (schedule_index.lua is
-- prepended.)
--
-- KEYS[1..7]  as in schedule_index.lua (definitions, last, next-fire, owners, counts, by-owner,
--             paused)
-- ARGV[1]     name
-- ARGV[2]     the caller: "api:<producer>" or "file"
--
-- Returns {"deleted", the pause JSON it ended or nil, Redis's now in ms}, or, nothing deleted:
-- {"missing"} (no such name), {"taken"} (another producer's), {"from_file"} (SCHEDULES_FILE's,
-- and the caller is not the file). The caller then removes the fences of every pause of the
-- name taken up to that time (a resume leaves them in place).

ensure_index()
local name = ARGV[1]
local current = redis.call('HGET', KEYS[4], name)
if not current then return {'missing'} end
if current ~= ARGV[2] then
  if current == 'file' then return {'from_file'} end
  return {'taken'}
end
local pause = redis.call('HGET', KEYS[7], name)
redis.call('HDEL', KEYS[1], name)
redis.call('HDEL', KEYS[2], name)
redis.call('ZREM', KEYS[3], name)
redis.call('HDEL', KEYS[4], name)
redis.call('HINCRBY', KEYS[5], current, -1)
redis.call('ZREM', KEYS[6], owned(current, name))
redis.call('HDEL', KEYS[7], name)
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
return {'deleted', pause or false, tostring(now)}
