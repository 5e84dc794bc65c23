-- enqueue.lua: write new jobs of one queue, or replay them by idempotency key, atomically.
--
-- KEYS      every key the call may touch, so that Redis Cluster routes it to the queue's slot:
--           the queue's ready list, scheduled set and wake-up list, each job's record and
--           idempotency key, each rate limit's set. The script takes their names from ARGV[1].
-- ARGV[1]   the call, MessagePack (`store::EnqueueCall`):
--             ready, scheduled, wake   the queue's keys
--             job_prefix               "<prefix>" of the record keys "<prefix>:<id>"
--             idem_ttl                 lifetime of an idempotency record, ms
--             check                    true: only look for conflicts and limits, write nothing
--                                      (a batch spanning queues checks every queue first)
--             jobs[i]                  id; key, the record's key; st, "queued" or "scheduled";
--                                      ra, run-at (ms); pi and gr, the priority code and group
--                                      (absent: normal, none), naming its lane (lanes.lua);
--                                      idem, the idempotency record's key, and
--                                      fp, the request's fingerprint (both absent: no key)
--             limits[j]                key, a sorted set (member: job id, score: ms on Redis's
--                                      clock); max per window; window (ms); name; jobs, the
--                                      1-based positions of the jobs that count against it
--             pauses, schedule, claimed  a schedule's regular tick only: the queue's hash of
--                                      schedule pauses, the schedule's name, and when the tick
--                                      was claimed (ms, the schedules' Redis clock); a pause of
--                                      that schedule taken at or after the claim writes nothing
-- ARGV[1+i] the record of jobs[i] (MessagePack, `record::JobRecord`), written as it is
--
-- Returns MessagePack: one tagged result per job, in order:
--   {t = "created", id, st, ra}
--   {t = "replayed", id, st, ra}  the key was seen with the same fingerprint, or this very job
--                                 id is already written (a resent call): the earlier job
--   {t = "conflict", id}          the key was seen with another fingerprint: the earlier job
--   {t = "limited", limit, wait}  over the rate limit `limit`; a slot frees in `wait` ms
--   {t = "not_written"}           another job of this call conflicts or is over a limit, or
--                                 the call is a schedule's tick refused by the schedule's pause
-- A call with any conflict or any job over a limit writes nothing, so a batch is all or
-- nothing within its queue. A replayed job does not count against a limit, and a job counts
-- only once it is written. Windows slide: entries older than the window are ignored and
-- trimmed, and an idle limit's set expires after one window.
-- An idempotency record is "<fingerprint> <job id>"; one whose job is gone (expired, deleted
-- by an operator) no longer holds its key, and the job is created anew.

local call = cmsgpack.unpack(ARGV[1])
local jobs = call.jobs
local results = {}
local conflict = false

if call.pauses then
  local paused_at = redis.call('HGET', call.pauses, call.schedule)
  if paused_at and tonumber(paused_at) >= call.claimed then
    for i = 1, #jobs do
      results[i] = {t = 'not_written'}
    end
    return cmsgpack.pack(results)
  end
end

-- Pass 1: look up every job and idempotency key before writing anything.
for i, job in ipairs(jobs) do
  results[i] = false
  local written = load_record(job.key)
  if written then
    -- This very job (same id) is already written: the call is a resend by a client library
    -- that lost the first answer (Redis Cluster clients resend after a dropped connection).
    -- Answer as a replay and write nothing, so a resend never makes a second copy.
    results[i] = {t = 'replayed', id = job.id, st = written.st, ra = written.ra}
  elseif job.idem then
    local held = redis.call('GET', job.idem)
    if held then
      local space = string.find(held, ' ', 1, true)
      local seen_fingerprint = string.sub(held, 1, space - 1)
      local seen_id = string.sub(held, space + 1)
      -- A record whose job is gone holds nothing: pass 3 overwrites it. It is not deleted
      -- here, so that a check, or a call refused later, writes nothing.
      local seen = load_record(call.job_prefix .. ':' .. seen_id)
      if seen and seen_fingerprint == job.fp then
        results[i] = {t = 'replayed', id = seen_id, st = seen.st, ra = seen.ra}
      elseif seen then
        results[i] = {t = 'conflict', id = seen_id}
        conflict = true
      end
    end
  end
end

local function refuse_the_rest()
  for i = 1, #jobs do
    if not results[i] then
      results[i] = {t = 'not_written'}
    end
  end
  return cmsgpack.pack(results)
end

if conflict then
  return refuse_the_rest()
end

-- Pass 2: the rate limits (reads only), on Redis's clock.
local limits = call.limits or {}
local limited = false
local clock = #limits > 0 and clock_ms() or 0
for _, limit in ipairs(limits) do
  local counted = {}
  for _, i in ipairs(limit.jobs) do
    if not results[i] then
      counted[#counted + 1] = i
    end
  end
  limit.counted = counted
  local since = '(' .. (clock - limit.window)
  local seen = redis.call('ZCOUNT', limit.key, since, '+inf')
  local over = seen + #counted - limit.max
  if over > 0 then
    limited = true
    -- The k-th job past the limit fits once the (seen + k - max)-th oldest entry leaves the window.
    local oldest = redis.call('ZRANGEBYSCORE', limit.key, since, '+inf', 'WITHSCORES', 'LIMIT', 0, over)
    for k, i in ipairs(counted) do
      local needed = seen + k - limit.max
      if needed > 0 and not results[i] then
        local wait = limit.window
        if oldest[2 * needed] then
          wait = tonumber(oldest[2 * needed]) + limit.window - clock
        end
        results[i] = {t = 'limited', limit = limit.name, wait = math.max(wait, 1)}
      end
    end
  end
end

if limited or call.check then
  return refuse_the_rest()
end

-- Pass 3: write the jobs that are new, and wake idle workers: one marker per immediate job,
-- at most 16 kept whoever waits.
local ready_now = 0
for i, job in ipairs(jobs) do
  if not results[i] then
    redis.call('SET', job.key, ARGV[1 + i])
    if job.st == 'scheduled' then
      redis.call('ZADD', call.scheduled, job.ra, job.id)
    else
      push_ids(call.ready, job.pi, job.gr, {job.id}, false)
      ready_now = ready_now + 1
    end
    if job.idem then
      redis.call('SET', job.idem, job.fp .. ' ' .. job.id, 'PX', call.idem_ttl)
    end
    results[i] = {t = 'created', id = job.id, st = job.st, ra = job.ra}
  end
end
if ready_now > 0 then
  for _ = 1, math.min(ready_now, 16) do
    redis.call('LPUSH', call.wake, '1')
  end
  redis.call('LTRIM', call.wake, 0, 15)
end

-- Pass 4: count the written jobs against their limits.
for _, limit in ipairs(limits) do
  if #limit.counted > 0 then
    redis.call('ZREMRANGEBYSCORE', limit.key, '-inf', clock - limit.window)
    for _, i in ipairs(limit.counted) do
      redis.call('ZADD', limit.key, clock, results[i].id)
    end
    redis.call('PEXPIRE', limit.key, limit.window)
  end
end
return cmsgpack.pack(results)
