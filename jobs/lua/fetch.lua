-- fetch.lua: lease up to `batch` jobs of one queue to one worker.
--
-- KEYS[1]  ready list (producers LPUSH; we pop from the right: FIFO)
-- KEYS[2]  scheduled sorted set (score: run-at, ms)
-- KEYS[3]  active sorted set (score: lease deadline, ms)
-- KEYS[4]  dead sorted set (score: dead_at, ms)
-- ARGV[1]  lease, ms: a job not acknowledged or extended by now + lease is recovered
-- ARGV[2]  batch: the most jobs to lease
-- ARGV[3]  promote limit: the most due scheduled jobs, and the most expired leases, moved per call
-- ARGV[4]  job-hash key prefix ("<prefix>:<id>")
-- ARGV[5]  worker id
-- ARGV[6]  idempotency key prefix ("<prefix>:<producer>:<key>")
--
-- "now" is Redis's own clock (TIME), so workers whose clocks disagree never take each other's live jobs.
--
-- Returns {promoted, recovered, next, job, job, ...}; each job is the flat array
-- {id, attempts, max_attempts, created_at, payload, producer, traceparent ("" = none)},
-- attempts counting this one. `next`, when no job was leased: ms until the next scheduled job
-- is due or the next lease runs out, whichever is sooner (-1: neither), so an idle worker knows
-- how long it may wait; -1 when jobs were leased.
--
-- Work per call is bounded by ARGV[3] and ARGV[4], never by the size of a set: due jobs are
-- moved in slices, so a backlog of any size drains without one giant reply or unpack.

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local lease = tonumber(ARGV[1])
local batch = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local prefix = ARGV[4]
local worker = ARGV[5]
local idem_prefix = ARGV[6]

-- Due jobs (delayed, or waiting out a retry backoff) go to the popping end: they are late already.
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('RPUSH', KEYS[1], id)
end

-- Leases that ran out belong to workers that died: the attempt counts, with its own record,
-- and the job runs again, or is buried when that was its last attempt.
local LOST = 'lease expired: the worker stopped answering'
local lost = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(lost) do
  redis.call('ZREM', KEYS[3], id)
  local key = prefix .. ':' .. id
  local job = redis.call('HMGET', key, 'attempts', 'max_attempts', 'started_at', 'worker')
  if job[1] then
    local attempts, max_attempts = tonumber(job[1]) or 0, tonumber(job[2]) or 1
    redis.call('RPUSH', key .. ':attempts', cjson.encode({
      attempt = attempts, started_at = tonumber(job[3]), finished_at = now, error = LOST, worker = job[4] or '' }))
    redis.call('HSET', key, 'last_error', LOST)
    if attempts >= max_attempts then
      bury(KEYS[4], key, id, 'exhausted', now, idem_prefix)
    else
      redis.call('HSET', key, 'status', 'queued')
      redis.call('RPUSH', KEYS[1], id)
    end
  end
end

local ids = redis.call('RPOP', KEYS[1], batch)
if not ids then
  local next = -1
  for _, set in ipairs({KEYS[2], KEYS[3]}) do
    local first = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
    if first[2] then
      local wait = math.max(tonumber(first[2]) - now, 0)
      if next < 0 or wait < next then
        next = wait
      end
    end
  end
  return {#due, #lost, next}
end
local result = {#due, #lost, -1}
for _, id in ipairs(ids) do
  local key = prefix .. ':' .. id
  local job = redis.call('HMGET', key, 'status', 'attempts', 'max_attempts', 'created_at', 'payload', 'producer', 'traceparent')
  -- A job deleted meanwhile (purged, evicted) or already finished is skipped, not run.
  if job[1] and job[1] ~= 'succeeded' and job[1] ~= 'dead' and job[1] ~= 'expired' then
    -- Fields a foreign writer left out get safe values: a script error here would leave the
    -- ids already popped in no list at all.
    local attempts = (tonumber(job[2]) or 0) + 1
    redis.call('HSET', key, 'status', 'running', 'attempts', attempts, 'started_at', now, 'worker', worker)
    redis.call('ZADD', KEYS[3], now + lease, id)
    table.insert(result, {id, attempts, tonumber(job[3]) or 1, tonumber(job[4]) or now, job[5] or '', job[6] or '', job[7] or ''})
  end
end
return result
