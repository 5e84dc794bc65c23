-- destination_release.lua: a delivery to a destination ended: free its slot, count the
-- outcome for the cool-down, and move the oldest parked jobs into the freed slots.
-- Prepended with record.lua and destination.lua.
--
-- KEYS[1]  the destination's in-flight ZSET     KEYS[2]  its parked ZSET
-- KEYS[3]  its state HASH                       KEYS[4]  the cooling index ZSET
-- KEYS[5]  the webhook queue's ready list       KEYS[6]  its scheduled ZSET
-- KEYS[7]  its wake-up list
-- ARGV[1]  record key prefix                    ARGV[2]  job id
-- ARGV[3]  the lease token the slot was taken with
-- ARGV[4]  "ok" (the destination answered: 2xx, or a 4xx other than 408/429) or "failed"
--          (connection error, timeout, 408, 429, 5xx)
-- ARGV[5]  the answer's Retry-After, ms (0: none); sets the gap directly, at most ARGV[8]
-- ARGV[6]  consecutive failures that open a cool-down
-- ARGV[7]  the first gap, ms                    ARGV[8]  the longest gap, ms
-- ARGV[9]  most deliveries in flight to the destination
-- ARGV[10] how long an idle destination's keys are kept, ms
-- ARGV[11] the destination's digest (its member in the cooling index)
-- ARGV[12] the destination as shown (scheme://host:port)
--
-- Returns {event, moved}: event "stale" (the member was not in flight: a lost lease or an
-- expired slot; nothing changed), "none", "opened" (the cool-down began), "extended" (the
-- probe failed: the gap doubled, or took the Retry-After) or "closed" (the destination
-- answered: the cool-down ended); moved: parked jobs moved to the ready list.

local now = clock_ms()
local member = ARGV[2] .. ':' .. ARGV[3]
local failed = ARGV[4] == 'failed'
local retry_after, threshold = tonumber(ARGV[5]), tonumber(ARGV[6])
local base_gap, max_gap = tonumber(ARGV[7]), tonumber(ARGV[8])
local max, idle, digest = tonumber(ARGV[9]), tonumber(ARGV[10]), ARGV[11]

if redis.call('ZREM', KEYS[1], member) == 0 then
  return {'stale', 0}
end
local state = redis.call('HMGET', KEYS[3], 'until', 'probe', 'failures', 'gap')
local cooling_until = tonumber(state[1] or '0')
local failures = tonumber(state[3] or '0')
local event = 'none'

-- The next gap: the Retry-After when given, else `gap`; at most the longest gap.
local function gap_of(gap)
  if retry_after > 0 then
    gap = retry_after
  end
  return math.min(math.max(gap, 1), max_gap)
end

if not failed then
  redis.call('HDEL', KEYS[3], 'failures', 'until', 'gap', 'probe', 'since')
  if cooling_until > 0 then
    redis.call('ZREM', KEYS[4], digest)
    event = 'closed'
  end
  cooling_until = 0
else
  failures = failures + 1
  redis.call('HSET', KEYS[3], 'failures', failures, 'origin', ARGV[12], 'max', max)
  local gap
  if cooling_until > 0 and state[2] == member then
    gap = gap_of(tonumber(state[4] or base_gap) * 2)
    event = 'extended'
  elseif cooling_until == 0 and failures >= threshold then
    gap = gap_of(base_gap)
    redis.call('HSET', KEYS[3], 'since', now)
    event = 'opened'
  end
  if gap then
    cooling_until = now + gap
    redis.call('HSET', KEYS[3], 'until', cooling_until, 'gap', gap)
    redis.call('HDEL', KEYS[3], 'probe')
    redis.call('ZADD', KEYS[4], cooling_until, digest)
  end
end

local moved = 0
if cooling_until == 0 then
  -- Slots past their deadline (a worker that died holding them) are free too.
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  moved = wake_parked(KEYS[2], KEYS[5], KEYS[6], KEYS[7], ARGV[1], max - redis.call('ZCARD', KEYS[1]), now)
  pull_head(KEYS[2], KEYS[6], KEYS[1])
end
keep({KEYS[1], KEYS[2], KEYS[3]}, math.max(cooling_until - now, 0) + idle)
prune_cooling(KEYS[4], now, idle)
return {event, moved}
