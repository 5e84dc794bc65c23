-- schedule_claim.lua: take the schedules that are due, at most a given number, for one
-- scheduler pass. Each one taken moves to the end of a short lease in the next-fire set, so
-- other schedulers do not take it too; the taker then records its next fire time (settle),
-- or, if the taker dies, the schedule comes due again when the lease ends. Only due entries
-- are read: the cost does not grow with the schedules that are not due.
-- (schedule_index.lua is prepended: definitions without an entry are indexed here.)
--
-- "Now" is Redis's clock, not the caller's: every scheduler judges what is due, and leases,
-- by the one clock, so a worker whose clock runs ahead neither fires ticks early nor holds
-- leases past their end.
--
-- A paused schedule is never taken: one found due (its score moved by a writer that raced the
-- pause) is parked again, in the same atomic step, so no scheduler fires it.
--
-- KEYS[1..7]  as in schedule_index.lua (definitions, last, next-fire, owners, counts, by-owner,
--             paused)
-- ARGV[1]     the lease, ms
-- ARGV[2]     the most schedules to take
--
-- Returns {{name, definition JSON, last fired tick ms or nil}, ...}, the lowest score left
-- in the next-fire set after the claim (nil when it is empty), and Redis's now in ms:
-- {items, next, now}.

ensure_index()
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local lease_until = now + tonumber(ARGV[1])
local items = {}
local names = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, name in ipairs(names) do
  local def = redis.call('HGET', KEYS[1], name)
  if def and redis.call('HEXISTS', KEYS[7], name) == 1 then
    redis.call('ZADD', KEYS[3], 'XX', PARKED, name)
  elseif def then
    redis.call('ZADD', KEYS[3], 'XX', lease_until, name)
    items[#items + 1] = {name, def, redis.call('HGET', KEYS[2], name)}
  else
    redis.call('ZREM', KEYS[3], name)
  end
end
local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
return {items, first[2] or false, now}
