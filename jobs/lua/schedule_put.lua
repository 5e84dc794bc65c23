-- schedule_put.lua: create or replace one schedule, owner-checked and within the quotas, in
-- one step, so two producers racing for a name, or many creates racing for the last slots of
-- a quota, cannot both win. (schedule_index.lua is prepended.)
--
-- KEYS[1..7]  as in schedule_index.lua (definitions, last, next-fire, owners, counts, by-owner,
--             paused)
-- ARGV[1]     name
-- ARGV[2]     the schedule's JSON
-- ARGV[3]     its owner: "api:<producer>" or "file"
-- ARGV[4]     its first fire time, ms (its score in the next-fire set)
-- ARGV[5]     "checked": refuse another owner's name and apply the quotas below;
--             "trusted" (SCHEDULES_FILE): replace whatever holds the name, no quota
-- ARGV[6]     the most schedules one owner may hold
-- ARGV[7]     the most schedules in all
--
-- Returns {"created"} or {"replaced"} (written; a replaced schedule's last fired tick is
-- cleared, its ticks count from its new updated_at), or, nothing written:
--   {"taken"}      the name belongs to another producer
--   {"from_file"}  the name belongs to SCHEDULES_FILE
--   {"over_limit", "per_producer" | "total"}
-- Replacing a schedule of one's own is never refused by a quota: it adds none. A replaced
-- schedule keeps its pause (an operator's pause is not undone by a redeploy that stores the
-- schedule again): it stays parked.

ensure_index()
local name, owner = ARGV[1], ARGV[3]
local current = redis.call('HGET', KEYS[4], name)
if ARGV[5] == 'checked' then
  if current and current ~= owner then
    if current == 'file' then return {'from_file'} end
    return {'taken'}
  end
  if not current then
    if tonumber(redis.call('HGET', KEYS[5], owner) or '0') >= tonumber(ARGV[6]) then
      return {'over_limit', 'per_producer'}
    end
    if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[7]) then
      return {'over_limit', 'total'}
    end
  end
end
redis.call('HSET', KEYS[1], name, ARGV[2])
redis.call('HDEL', KEYS[2], name)
if redis.call('HEXISTS', KEYS[7], name) == 1 then
  redis.call('ZADD', KEYS[3], PARKED, name)
else
  redis.call('ZADD', KEYS[3], ARGV[4], name)
end
if current ~= owner then
  if current then
    redis.call('HINCRBY', KEYS[5], current, -1)
    redis.call('ZREM', KEYS[6], owned(current, name))
  end
  redis.call('HSET', KEYS[4], name, owner)
  redis.call('HINCRBY', KEYS[5], owner, 1)
  redis.call('ZADD', KEYS[6], 0, owned(owner, name))
end
if current then return {'replaced'} end
return {'created'}
