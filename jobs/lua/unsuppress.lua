-- unsuppress.lua: remove one address from the suppression list.
--
-- KEYS[1]  HASH of the entries (`SuppressionKeys::entries`)
-- KEYS[2]  ZSET of the addresses by time (`SuppressionKeys::order`)
-- ARGV[1]  the normalised address
--
-- Returns the entry removed (JSON), or false when the address was not listed.

local entry = redis.call('HGET', KEYS[1], ARGV[1])
if not entry then
  return false
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return entry
