-- schedule_claim.lua: take the schedules that are due, at most a given number, for one
-- scheduler pass. Each one taken moves to the end of a short lease in the next-fire set, so
-- other schedulers do not take it too; the taker then records its next fire time (settle),
-- or, if the taker dies, the schedule comes due again when the lease ends. Only due entries
-- are read: the cost does not grow with the schedules that are not due.
-- (schedule_index.lua is prepended: definitions without an entry are indexed here.)
--
-- KEYS[1..5]  as in schedule_index.lua (definitions, last, next-fire, owners, counts)
-- ARGV[1]     now, ms
-- ARGV[2]     end of the lease, ms
-- ARGV[3]     the most schedules to take
--
-- Returns {{name, definition JSON, last fired tick ms or nil}, ...} and the lowest score left
-- in the next-fire set after the claim (nil when it is empty): {items, next}.

ensure_index()
local items = {}
local names = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, name in ipairs(names) do
  local def = redis.call('HGET', KEYS[1], name)
  if def then
    redis.call('ZADD', KEYS[3], 'XX', ARGV[2], name)
    items[#items + 1] = {name, def, redis.call('HGET', KEYS[2], name)}
  else
    redis.call('ZREM', KEYS[3], name)
  end
end
local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
return {items, first[2] or false}
