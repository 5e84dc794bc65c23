-- fetch.lua: lease up to `batch` jobs of one queue to one worker.
--
-- KEYS[1]  ready list: the normal lane; the other lanes and the group lists are named after it
--          (lanes.lua). Popped high lane first, then normal, then low, each round-robin over
--          its groups (producers LPUSH; we pop from the right: FIFO within a list)
-- KEYS[2]  scheduled sorted set: delayed jobs (score: run-at, ms)
-- KEYS[3]  retry sorted set: jobs waiting out a retry backoff (score: run-at, ms)
-- KEYS[4]  active sorted set (score: lease deadline, ms)
-- KEYS[5]  dead sorted set (score: dead_at, ms)
-- KEYS[6]  the queue's pause marker (a STRING, present while the queue is paused)
-- KEYS[7]  [rate] the kind's token bucket (a HASH, rate.lua; absent: no limit)
-- ARGV[1]  lease, ms: a job not acknowledged or extended by now + lease is recovered
-- ARGV[2]  batch: the most jobs to lease
-- ARGV[3]  promote limit: the most due jobs of each waiting set, and the most expired
--          leases, moved per call
-- ARGV[4]  record key prefix ("<prefix>:<id>")
-- ARGV[5]  worker id
-- ARGV[6]  idempotency key prefix ("<prefix>:<producer>:<key>")
-- ARGV[7]  [rate] ramp, ms: after a provider's throttle, the rate climbs back by the whole
--          limit in this time (rate.lua)
--
-- "now" is Redis's own clock (TIME).
-- Also touched, named after the keys above (same hash tag): "<KEYS[1]>:cancelled", the count of
-- cancelled ids still in the ready list (cancel.lua), less one per cancelled or missing record
-- popped (never below 0); the queue's cancelled stream ("<queue>:cancelled"), for a job whose
-- cancellation was asked while it ran and whose lease ran out: it ends cancelled.
--
-- Returns {promoted, recovered, next, skipped, paused, throttled, id, record, id, record, ...}: each leased job's
-- id and its record as now stored (MessagePack: status running, attempts counting this one,
-- ln the lease's token, which finish, extend and release must present).
-- `next`, when no job was leased: 0 while jobs are still ready (every id popped was skipped),
-- else ms until the next waiting job is due or the next lease runs out, whichever is sooner
-- (-1: none), so an idle worker knows how long it may wait; -1 when jobs were leased.
-- `skipped`: ids popped whose record was missing or unreadable (deleted meanwhile, or written
-- by a foreign writer); a finished job popped again is skipped silently.
-- `paused`: 1 when the queue is paused: nothing was leased (due jobs were still promoted and
-- expired leases recovered), and `next` is -1; else 0.
-- `throttled` [rate]: 1 when jobs are ready but the kind's bucket has no token: nothing was
-- popped, and `next` is the ms until a token is due; else 0. The worker sleeps that long
-- instead of waiting on the wake-up list (a new job would only find no token either).
-- [rate] A job leases only with a token: at most as many jobs as tokens are popped, and the
-- tokens of ids popped but not leased (cancelled, missing) go back to the bucket.
--
-- Work per call is bounded by ARGV[2] and ARGV[3], never by the size of a set: due jobs are
-- moved in slices, so a backlog of any size drains without one giant reply or unpack.

local now = clock_ms()
local lease = tonumber(ARGV[1])
local batch = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local prefix = ARGV[4]
local worker = ARGV[5]
local idem_prefix = ARGV[6]
-- [rate] The bucket is counted before the pop and its tokens taken after it, in this script.
local bucket = rate_read(KEYS[7], now, tonumber(ARGV[7]))
-- Read here, in the same script as the lease: a pause is in force from the first fetch after it.
local paused = redis.call('EXISTS', KEYS[6]) == 1

-- Due jobs (delayed, or waiting out a retry backoff) go to the popping end: they are late
-- already. Pushed latest first, so that the earliest due is popped first.
local promoted = 0
for _, set in ipairs({KEYS[2], KEYS[3]}) do
  local due = redis.call('ZRANGEBYSCORE', set, '-inf', now, 'LIMIT', 0, limit)
  if #due > 0 then
    redis.call('ZREM', set, unpack(due))
    -- Each goes to its own lane and group, which only its record knows: one GET per id, within
    -- the promote limit. Jobs of the normal ungrouped lane go in one push.
    local plain = {}
    for i = #due, 1, -1 do
      local record = load_record(prefix .. ':' .. due[i])
      if record and (record.pi or record.gr) then
        push(KEYS[1], record, due[i], true)
      else
        plain[#plain + 1] = due[i]
      end
    end
    push_ids(KEYS[1], nil, nil, plain, true)
    promoted = promoted + #due
  end
end

-- Leases that ran out belong to workers that died: the attempt counts, with its own record,
-- and the job runs again, or is buried when that was its last attempt.
local LOST = 'lease expired: the worker stopped answering'
-- A job whose cancellation was asked while it ran ends cancelled instead.
local lost = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, limit)
local cancelled, cancelled_keep = {}, 0
for _, id in ipairs(lost) do
  redis.call('ZREM', KEYS[4], id)
  local key = prefix .. ':' .. id
  local record = load_record(key)
  if record and record.st == 'running' then
    add_attempt(record, now, LOST)
    record.le = LOST
    if record.cx then
      cancel_record(key, record, now, idem_prefix)
      cancelled[#cancelled + 1] = id
      cancelled_keep = math.max(cancelled_keep, record.cr or 0)
    elseif (record.at or 0) >= (record.ma or 1) then
      bury(record, KEYS[5], id, 'exhausted', now, idem_prefix)
    else
      record.st = 'queued'
      push(KEYS[1], record, id, true)
    end
    if not record.cx then
      save_record(key, record)
    end
  end
end
if #cancelled > 0 then
  index_finished(queue_key(prefix, 'cancelled'), cancelled, now, math.max(cancelled_keep, CANCELLED_MIN_KEEP))
end

-- How long a worker that leased nothing may wait (see `next` above).
local function next_work()
  if any_ready(KEYS[1]) then
    return 0
  end
  local next = -1
  for _, set in ipairs({KEYS[2], KEYS[3], KEYS[4]}) do
    local first = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
    if first[2] then
      local wait = math.max(tonumber(first[2]) - now, 0)
      if next < 0 or wait < next then
        next = wait
      end
    end
  end
  return next
end

if paused then
  return {promoted, #lost, -1, 0, 1, 0}
end
-- [rate] No token: nothing is popped, so no record is read or written and no attempt burnt.
local grant = rate_grant(bucket, batch)
if bucket.wait then
  local next = next_work()
  if next == 0 then
    return {promoted, #lost, bucket.wait, 0, 0, 1}
  end
  return {promoted, #lost, next, 0, 0, 0}
end
local ids = pop(KEYS[1], grant)
if #ids == 0 then
  return {promoted, #lost, next_work(), 0, 0, 0}
end
local HEADER = 6
local result = {promoted, #lost, -1, 0, 0, 0}
local skipped = 0
local gone = 0
local deadline = now + lease
for _, id in ipairs(ids) do
  local key = prefix .. ':' .. id
  local record = load_record(key)
  if not record then
    skipped = skipped + 1
    gone = gone + 1
  elseif record.st == 'cancelled' then
    gone = gone + 1
  elseif not is_finished(record) then
    record.st = 'running'
    record.at = (record.at or 0) + 1
    record.ln = (record.ln or 0) + 1
    record.sa = now
    record.wk = worker
    local packed = cmsgpack.pack(record)
    redis.call('SET', key, packed)
    redis.call('ZADD', KEYS[4], deadline, id)
    result[#result + 1] = id
    result[#result + 1] = packed
  end
end
result[4] = skipped
rate_take(bucket, (#result - HEADER) / 2) -- [rate]
if gone > 0 then
  local counter = KEYS[1] .. ':cancelled'
  local left = tonumber(redis.call('GET', counter) or '0')
  if left > 0 then
    redis.call('SET', counter, math.max(left - gone, 0))
  end
end
if #result == HEADER then
  result[3] = next_work()
end
return result
