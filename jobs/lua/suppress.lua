-- suppress.lua: add (or refresh) one address on the suppression list, bounded.
--
-- KEYS[1]  HASH of the entries (`SuppressionKeys::entries`): field the normalised address,
--          value the entry (JSON: reason, at, detail, job)
-- KEYS[2]  ZSET of the same addresses by the time they were suppressed (`SuppressionKeys::order`)
-- ARGV[1]  the normalised address
-- ARGV[2]  the entry (JSON)
-- ARGV[3]  when (ms): the ZSET score
-- ARGV[4]  cap: the most entries kept; the oldest beyond it are evicted
--
-- Returns {added, evicted}: added is 1 for a new address, 0 for one already listed (its entry
-- replaced, its time refreshed); evicted counts the oldest entries dropped to keep the cap.

local added = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]), ARGV[1])
local cap = tonumber(ARGV[4])
local evicted = 0
local over = redis.call('ZCARD', KEYS[2]) - cap
if over > 0 then
  local oldest = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #oldest, 2 do
    redis.call('HDEL', KEYS[1], oldest[i])
    evicted = evicted + 1
  end
end
return {added, evicted}
