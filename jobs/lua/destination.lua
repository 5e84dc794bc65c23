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

-- Gives back the rate-limit token the fetch took for a job that is not sent after all (deferred,
-- or cancelled before its delivery began), so a destination's line cycling through fetches does
-- not eat its kind's rate (rate.lua's bucket: `tk` tokens left when last counted, at most the
-- burst `bu`). Nothing without a limit in force.
local function give_token_back(bucket)
  local counted = redis.call('HMGET', bucket, 'tk', 'ps', 'bu')
  local tokens, rate = tonumber(counted[1]), tonumber(counted[2])
  if tokens and rate and rate > 0 then
    redis.call('HSET', bucket, 'tk', math.min(tokens + 1, tonumber(counted[3]) or rate))
  end
end

-- Drops index entries of destinations whose state expired long ago (their gap ended more than
-- `idle` ms ago and no probe came).
local function prune_cooling(index, now, idle)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', now - idle)
end
