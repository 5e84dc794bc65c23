-- destination_acquire.lua: before a webhook is sent, take a slot of its destination, or defer
-- the job. Prepended with record.lua and destination.lua.
--
-- KEYS[1]  the destination's in-flight ZSET     KEYS[2]  its parked ZSET
-- KEYS[3]  its state HASH                       KEYS[4]  the cooling index ZSET
-- KEYS[5]  the webhook queue's active ZSET      KEYS[6]  the webhook queue's scheduled ZSET
-- KEYS[7]  the webhook queue's token bucket (`QueueKeys::bucket`, rate.lua): a job deferred or
--          cancelled here sends nothing, so the token its lease took goes back
-- ARGV[1]  record key prefix ("<prefix>:<id>")  ARGV[2]  job id
-- ARGV[3]  the job's lease token (the record's ln)
-- ARGV[4]  most deliveries in flight to the destination
-- ARGV[5]  how long a slot is held at most, ms (its deadline: now + this)
-- ARGV[6]  longest total deferral, ms, counted from the job's first deferral (the record's df)
-- ARGV[7]  how long an idle destination's keys are kept, ms
-- ARGV[8]  the destination as shown (scheme://host:port)
--
-- Returns one of:
--   {"acquired", probe}: a slot is held (member "<id>:<token>"); probe 1 when it is the single
--     probe of a destination whose cool-down gap has ended. The record's df is cleared, and the
--     job leaves the parked line (were it back by its fallback).
--   {"deferred", run_at, reason}: no slot (reason "busy") or the destination cools down
--     ("cooling"): the job gave its attempt back (at - 1, no history entry) and its token
--     (KEYS[7]), left the active set, is `scheduled` in KEYS[6] at run_at (a fallback: a
--     freed slot moves it sooner) and parked in KEYS[2] (score: its first deferral, the
--     record's df).
--   {"overdue", first}: the job has waited ARGV[6] since its first deferral (ms `first`):
--     not deferred again; the caller fails it (it ends expired). Nothing changed.
--   {"cancelled"}: no slot, and the job's cancellation was asked while it ran (the record's
--     cx): its delivery never began, so it ends `cancelled` (out of the active set, indexed in
--     the queue's cancelled stream) instead of waiting.
--   {"stale"}: the lease is no longer the job's: nothing changed.

local now = clock_ms()
local id, token = ARGV[2], tonumber(ARGV[3])
local max, hold = tonumber(ARGV[4]), tonumber(ARGV[5])
local max_deferral, idle = tonumber(ARGV[6]), tonumber(ARGV[7])
local member = id .. ':' .. ARGV[3]
local key = ARGV[1] .. ':' .. id

-- Slots past their deadline belong to workers that died.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local state = redis.call('HMGET', KEYS[3], 'until', 'probe')
local cooling_until = tonumber(state[1] or '0')
local reason, probe = nil, 0
if cooling_until > 0 then
  if now < cooling_until or (state[2] and redis.call('ZSCORE', KEYS[1], state[2])) then
    reason = 'cooling'
  else
    probe = 1
  end
elseif redis.call('ZCARD', KEYS[1]) >= max then
  reason = 'busy'
end

local record = load_record(key)
if not record or record.st ~= 'running' or record.ln ~= token or not redis.call('ZSCORE', KEYS[5], id) then
  return {'stale'}
end

if not reason then
  redis.call('ZADD', KEYS[1], now + hold, member)
  if probe == 1 then
    redis.call('HSET', KEYS[3], 'probe', member)
  end
  if record.df then
    -- Back by its fallback rather than a wake-up: it leaves the line.
    redis.call('ZREM', KEYS[2], id)
    record.df = nil
    save_record(key, record)
  end
  keep({KEYS[1], KEYS[3]}, math.max(cooling_until - now, 0) + hold + idle)
  return {'acquired', probe}
end

if record.cx then
  redis.call('ZREM', KEYS[5], id)
  record.at = math.max((record.at or 1) - 1, 0)
  cancel_record(key, record, now, queue_key(ARGV[1], 'idem'))
  index_finished(queue_key(ARGV[1], 'cancelled'), {id}, now, math.max(record.cr or 0, CANCELLED_MIN_KEEP))
  rate_give(KEYS[7], 1)
  return {'cancelled'}
end

local first = record.df or now
if now - first >= max_deferral then
  return {'overdue', first}
end
-- The fallback run-at: after the cool-down's gap, plus a slot's hold for every `max` jobs
-- parked ahead, so a long line comes back at most at the destination's slowest pace (every slot
-- held its whole hold), not all at once, each job a fetch and a deferral again (a freed slot
-- moves the oldest sooner); never later than the deferral's end, so an overdue job is found.
-- A busy destination's line starts when its first slot runs out, not a whole hold from now: the
-- slots of a worker killed mid-delivery free nobody's wake-up, and the line must not wait more
-- than their deadline for them.
local ahead = redis.call('ZCARD', KEYS[2])
local spread = math.floor(ahead * hold / max)
local start = now + hold
if reason == 'busy' then
  local first_slot = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if first_slot[2] then
    start = math.min(start, tonumber(first_slot[2]))
  end
end
local run_at = math.max(start, cooling_until + hold) + spread
run_at = math.min(run_at, first + max_deferral)
redis.call('ZREM', KEYS[5], id)
record.at = math.max((record.at or 1) - 1, 0)
record.st = 'scheduled'
record.ra = run_at
record.df = first
save_record(key, record)
redis.call('ZADD', KEYS[6], run_at, id)
redis.call('ZADD', KEYS[2], first, id)
if reason == 'busy' then
  pull_head(KEYS[2], KEYS[6], KEYS[1])
end
-- Without this, a limited kind's tokens go to jobs that only wait: one slow destination's
-- parked line, leased again at each fallback run-at, would starve every other destination.
rate_give(KEYS[7], 1)
redis.call('HSET', KEYS[3], 'origin', ARGV[8], 'max', max)
keep({KEYS[1], KEYS[2], KEYS[3]}, math.max(run_at - now, 0) + hold + idle)
prune_cooling(KEYS[4], now, idle)
return {'deferred', run_at, reason}
