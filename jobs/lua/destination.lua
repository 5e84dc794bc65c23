-- destination.lua: prepended (after record.lua) to the scripts of webhook destinations
-- (destination_acquire.lua, destination_release.lua, destination_resume.lua).
--
-- A destination (scheme://host:port of a webhook URL) has, under the `{webhook}` hash tag and
-- named by a digest of the destination: an in-flight ZSET (member "<job id>:<lease token>",
-- score: the slot's deadline, so a dead worker's slot frees itself), a parked ZSET (ids of
-- deferred jobs, score: when each was first deferred, so the oldest goes first), and a state
-- HASH (failures: consecutive failed deliveries; until: end of the cool-down's gap, ms;
-- gap: its length, ms; probe: the member holding the probe slot; origin: scheme://host:port;
-- max: the in-flight limit last used; since: when the cool-down opened). The cooling index is
-- a ZSET of the destinations cooling down (member: digest, score: until).

-- Moves up to `n` of the oldest parked jobs still waiting in the scheduled set to the popping
-- end of their lane (lanes.lua's `push`: their priority and group kept; queued, run-at now),
-- and pushes one wake-up marker per job moved (at
-- most 16 kept). A parked id no longer waiting (cancelled, run already, promoted by a fetch)
-- is dropped (cancel.lua does not know a job's destination, so a burst of cancellations leaves
-- many such ids in the line). Looks at most n + 1000 parked ids: a ZPOPMIN and a GET each.
-- Returns how many were moved.
local function wake_parked(parked, ready, scheduled, wake, prefix, n, now)
  local moved, looked, ids, records = 0, 0, {}, {}
  while moved < n and looked < n + 1000 do
    local first = redis.call('ZPOPMIN', parked)
    if not first[1] then
      break
    end
    looked = looked + 1
    local id = first[1]
    local key = prefix .. ':' .. id
    local record = load_record(key)
    if record and record.st == 'scheduled' and redis.call('ZREM', scheduled, id) == 1 then
      record.st = 'queued'
      record.ra = now
      save_record(key, record)
      moved = moved + 1
      ids[moved], records[moved] = id, record
    end
  end
  -- Latest first, so that the oldest is popped first.
  for i = moved, 1, -1 do
    push(ready, records[i], ids[i], true)
  end
  for _ = 1, math.min(moved, 16) do
    redis.call('LPUSH', wake, '1')
  end
  if moved > 0 then
    redis.call('LTRIM', wake, 0, 15)
  end
  return moved
end

-- Keeps a destination's keys for `ms` more (each key that exists), so an idle destination's
-- keys expire by themselves.
local function keep(keys, ms)
  for _, key in ipairs(keys) do
    redis.call('PEXPIRE', key, ms)
  end
end

-- The head of a busy destination's parked line (the job a freed slot wakes next) comes back by
-- its fallback no later than the first slot's deadline: a worker killed while holding every
-- slot frees none and wakes nobody, and the line must not wait for fallbacks spread far out
-- behind jobs woken meanwhile. Only lowers the head's run-at (ZADD XX LT), and only while a
-- slot is held.
local function pull_head(parked, scheduled, inflight)
  local head = redis.call('ZRANGE', parked, 0, 0)[1]
  local first_slot = redis.call('ZRANGE', inflight, 0, 0, 'WITHSCORES')
  if head and first_slot[2] then
    redis.call('ZADD', scheduled, 'XX', 'LT', first_slot[2], head)
  end
end

-- Drops index entries of destinations whose state expired long ago (their gap ended more than
-- `idle` ms ago and no probe came).
local function prune_cooling(index, now, idle)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', now - idle)
end
