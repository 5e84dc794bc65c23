-- schedule_index.lua: prepended to the schedule scripts that read or write the index of
-- schedules (owners, counts, next-fire times); not a script of its own.
--
-- Every script it is prepended to takes these KEYS:
-- KEYS[1]  definitions hash: name -> schedule JSON
-- KEYS[2]  last fired tick hash: name -> ms
-- KEYS[3]  next-fire sorted set: name, score = when a scheduler should look at it next (ms)
-- KEYS[4]  owners hash: name -> "api:<producer>" or "file"
-- KEYS[5]  counts hash: owner -> how many schedules it has
-- KEYS[6]  by-owner sorted set: members "<owner>\0<name>", all of score 0, so one owner's
--          names are one lexicographic range (listing them reads only them)
-- KEYS[7]  paused hash: name -> the pause as JSON ({"at": ms, "by": who}); present while paused
--
-- ensure_index() rebuilds owners, counts, by-owner and the next-fire set from the definitions when
-- their sizes disagree (definitions stored by a version before the index, or by one still
-- running during an upgrade). A schedule it adds to the next-fire set gets score 0: due at
-- once, so the next scheduler pass computes its real next fire time.

-- The next-fire score of a paused schedule: after every real fire time (2^52 ms, far beyond
-- year 100000), so a paused schedule is never claimed while its pause lasts.
local PARKED = 4503599627370496

local function owner_of(def)
  local ok, parsed = pcall(cjson.decode, def)
  if not ok or type(parsed) ~= 'table' then return 'unknown' end
  if parsed.source == 'file' then return 'file' end
  if type(parsed.producer) ~= 'string' then return 'unknown' end
  return 'api:' .. parsed.producer
end

local function owned(owner, name)
  return owner .. '\0' .. name
end

local function ensure_index()
  local n = redis.call('HLEN', KEYS[1])
  if redis.call('HLEN', KEYS[4]) == n and redis.call('ZCARD', KEYS[3]) == n
    and redis.call('ZCARD', KEYS[6]) == n then
    return 0
  end
  redis.call('DEL', KEYS[4], KEYS[5], KEYS[6])
  local flat = redis.call('HGETALL', KEYS[1])
  for i = 1, #flat, 2 do
    local owner = owner_of(flat[i + 1])
    redis.call('HSET', KEYS[4], flat[i], owner)
    redis.call('HINCRBY', KEYS[5], owner, 1)
    redis.call('ZADD', KEYS[6], 0, owned(owner, flat[i]))
    redis.call('ZADD', KEYS[3], 'NX', 0, flat[i])
  end
  for _, name in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
    if redis.call('HEXISTS', KEYS[1], name) == 0 then
      redis.call('ZREM', KEYS[3], name)
    end
  end
  return 1
end
