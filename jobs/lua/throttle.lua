-- throttle.lua: a provider answered "too many requests" for a kind: slow the whole kind down,
-- for every worker. Prepended with record.lua and rate.lua.
--
-- KEYS[1]  the kind's bucket (`QueueKeys::bucket`, see rate.lua)
-- ARGV[1]  the provider's Retry-After, ms (-1: none given): no token until now + it
-- ARGV[2]  ramp, ms: the reduced rate climbs back by the whole limit in this time
-- ARGV[3]  without a limit and without a Retry-After: no token for this long, ms
-- ARGV[4]  the lowest rate a throttle reduces to, as a fraction of the limit
-- ARGV[5]  ms after one reduction in which another throttle does not reduce again (the
--          jobs already in flight answer the same refusal: one reduction per round)
--
-- With a limit: the rate in force is halved (multiplicative decrease, not below ARGV[4] of the
-- limit), the bucket emptied, and the rate climbs back to the limit afterwards (additive
-- increase, rate.lua's `rate_effective`), starting when the Retry-After ends. Without a limit
-- (and no console mark) the bucket holds only the hold, and expires with it.
--
-- Returns {rate, until, reduced}: the rate now in force in thousandths of a token a second
-- (-1: no limit), the time no token is given before (ms; 0: none), 1 when this call reduced
-- the rate.

local now = clock_ms()
local after = tonumber(ARGV[1])
local ramp = tonumber(ARGV[2])
local pause = tonumber(ARGV[3])
local floor = tonumber(ARGV[4])
local gap = tonumber(ARGV[5])
local b = rate_read(KEYS[1], now, ramp)
local held = b.un or 0
if after >= 0 then
  held = math.max(held, now + after)
elseif not b.ps then
  held = math.max(held, now + pause)
end
if held > now then
  redis.call('HSET', KEYS[1], 'un', held)
end
if not b.ps or b.ps <= 0 then
  -- Nothing but the hold: the bucket goes with it, so fetches are back to one EXISTS.
  if held > now and redis.call('HEXISTS', KEYS[1], 'src') == 0 then
    redis.call('PEXPIREAT', KEYS[1], held)
  end
  return {-1, held > now and held or 0, 0}
end
local rate = rate_effective(b, now, ramp)
local reduced = 0
local last = tonumber(redis.call('HGET', KEYS[1], 'dt'))
if not last or now - last >= gap then
  rate = math.max(rate / 2, b.ps * floor)
  redis.call('HSET', KEYS[1], 'e0', rate, 't0', math.max(now, held), 'dt', now)
  reduced = 1
end
redis.call('HSET', KEYS[1], 'tk', 0, 'ts', now)
return {math.floor(rate * 1000), held > now and held or 0, reduced}
