-- enqueue.lua: write new jobs of one queue, or replay them by idempotency key, atomically.
--
-- KEYS[1]        ready list of the queue (LPUSH; workers pop from the right)
-- KEYS[2]        scheduled sorted set of the queue (score: run-at, ms)
-- KEYS[1+2i]     job hash of job i (i = 1..n)
-- KEYS[2+2i]     idempotency key of job i (its job hash again when it has none)
-- KEYS[2+2n+j]   rate-limit sorted set of limit j (j = 1..m; member: job id, score: ms on
--                Redis's clock), e.g. the OTP SMS of one recipient or one API key
-- KEYS[3+2n+m]   wake-up list of the queue: one marker per immediate job written (at most 16
--                kept), for the workers blocked on it in BLPOP
-- ARGV[1]        now, ms since the epoch (the producer's clock)
-- ARGV[2]        lifetime of an idempotency record, ms
-- ARGV[3]        the queue's kind
-- ARGV[4]        job-hash key prefix, to read the status of a replayed job ("<prefix>:<id>")
-- ARGV[5]        n, the number of jobs
-- ARGV[6+8n]     "check" to only look for conflicts and write nothing (a batch spanning queues
--                checks every queue before writing any), anything else to write
-- ARGV[6+8(i-1) .. 13+8(i-1)], for job i:
--                id, fingerprint ("" when no idempotency key), run_at ms ("0" = now),
--                max_attempts, producer, idempotency key ("" = none), payload JSON,
--                W3C traceparent of the request ("" = none)
-- ARGV[7+8n]     m, the number of rate limits (absent = 0)
-- ARGV[8+8n+4(j-1) .. 11+8n+4(j-1)], for limit j:
--                max per window, window ms, the limit's name, the jobs that count against it
--                (their 1-based positions in this call, space-separated)
--
-- Returns one {code, id, status, run_at ms} per job, in order:
--   1  created: the new job's id, status "queued" or "scheduled", and run-at
--   2  replayed: the key was seen with the same fingerprint, or this job id is already written
--      (a resent call); the earlier job's id, status, run-at
--   0  conflict: the key was seen with another fingerprint; the earlier job's id
--  -2  over a rate limit: {-2, the limit's name, "", ms until enough slots free for it}
--  -1  not written, because another job of this call conflicts or is over a limit
-- A call with any conflict or any job over a limit writes nothing, so a batch is all or
-- nothing within its queue. A replayed job does not count against a limit, and a job counts
-- only once it is written. Windows slide: entries older than the window are ignored and
-- trimmed, and an idle limit's set expires after one window.
-- An idempotency record is "<fingerprint> <job id>"; one whose job is gone (deleted by an
-- operator) no longer holds its key, and the job is created anew.

local now = tonumber(ARGV[1])
local idem_ttl = ARGV[2]
local kind = ARGV[3]
local job_prefix = ARGV[4]
local n = tonumber(ARGV[5])
local STRIDE = 8
local check_only = ARGV[6 + STRIDE * n] == 'check'

local results = {}
local conflict = false

-- Pass 1: look up every idempotency key before writing anything.
for i = 1, n do
  local a = 5 + STRIDE * (i - 1)
  local fingerprint = ARGV[a + 2]
  results[i] = false
  local written = redis.call('HMGET', KEYS[1 + 2 * i], 'status', 'run_at')
  if written[1] then
    -- This very job (same id) is already written: the call is a resend by a client library
    -- that lost the first answer (Redis Cluster clients resend after a dropped connection).
    -- Answer as a replay and write nothing, so a resend never makes a second copy.
    results[i] = {2, ARGV[a + 1], written[1], written[2]}
  elseif fingerprint ~= '' then
    local record = redis.call('GET', KEYS[2 + 2 * i])
    if record then
      local space = string.find(record, ' ', 1, true)
      local seen_fingerprint = string.sub(record, 1, space - 1)
      local seen_id = string.sub(record, space + 1)
      local seen = redis.call('HMGET', job_prefix .. ':' .. seen_id, 'status', 'run_at')
      if not seen[1] then
        redis.call('DEL', KEYS[2 + 2 * i])
      elseif seen_fingerprint == fingerprint then
        results[i] = {2, seen_id, seen[1], seen[2]}
      else
        results[i] = {0, seen_id, '', '0'}
        conflict = true
      end
    end
  end
end

local function refuse_the_rest()
  for i = 1, n do
    if not results[i] then
      results[i] = {-1, ARGV[5 + STRIDE * (i - 1) + 1], '', '0'}
    end
  end
  return results
end

if conflict then
  return refuse_the_rest()
end

-- Pass 2: the rate limits (reads only), on Redis's clock.
local m = tonumber(ARGV[7 + STRIDE * n]) or 0
local limits = {}
local limited = false
if m > 0 then
  local time = redis.call('TIME')
  local clock = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  for j = 1, m do
    local a = 7 + STRIDE * n + 4 * (j - 1)
    local limit = {key = KEYS[2 + 2 * n + j], max = tonumber(ARGV[a + 1]), window = tonumber(ARGV[a + 2]),
      name = ARGV[a + 3], clock = clock, jobs = {}}
    for position in string.gmatch(ARGV[a + 4], '%d+') do
      local i = tonumber(position)
      if not results[i] then
        table.insert(limit.jobs, i)
      end
    end
    local since = '(' .. (clock - limit.window)
    local seen = redis.call('ZCOUNT', limit.key, since, '+inf')
    local over = seen + #limit.jobs - limit.max
    if over > 0 then
      limited = true
      -- The k-th job past the limit fits once the (seen + k - max)-th oldest entry leaves the window.
      local oldest = redis.call('ZRANGEBYSCORE', limit.key, since, '+inf', 'WITHSCORES', 'LIMIT', 0, over)
      for k = 1, #limit.jobs do
        local needed = seen + k - limit.max
        local i = limit.jobs[k]
        if needed > 0 and not results[i] then
          local wait = limit.window
          if oldest[2 * needed] then
            wait = tonumber(oldest[2 * needed]) + limit.window - clock
          end
          results[i] = {-2, limit.name, '', tostring(math.max(wait, 1))}
        end
      end
    end
    limits[j] = limit
  end
end

if limited or check_only then
  return refuse_the_rest()
end

-- Pass 3: write the jobs that are new.
for i = 1, n do
  if not results[i] then
    local a = 5 + STRIDE * (i - 1)
    local id, fingerprint, run_at = ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
    local status = 'queued'
    if run_at > now then
      status = 'scheduled'
    else
      run_at = now
    end
    redis.call('HSET', KEYS[1 + 2 * i],
      'id', id, 'kind', kind, 'status', status, 'attempts', 0,
      'max_attempts', ARGV[a + 4], 'producer', ARGV[a + 5], 'idempotency_key', ARGV[a + 6],
      'created_at', now, 'run_at', run_at, 'payload', ARGV[a + 7])
    if ARGV[a + 8] ~= '' then
      redis.call('HSET', KEYS[1 + 2 * i], 'traceparent', ARGV[a + 8])
    end
    if status == 'scheduled' then
      redis.call('ZADD', KEYS[2], run_at, id)
    else
      redis.call('LPUSH', KEYS[1], id)
    end
    if fingerprint ~= '' then
      redis.call('SET', KEYS[2 + 2 * i], fingerprint .. ' ' .. id, 'PX', idem_ttl)
    end
    results[i] = {1, id, status, tostring(run_at)}
  end
end

-- Wake idle workers: one marker per immediate job, at most 16 kept whoever waits.
local ready_now = 0
for i = 1, n do
  if results[i][1] == 1 and results[i][3] == 'queued' then
    ready_now = ready_now + 1
  end
end
if ready_now > 0 then
  local wake = KEYS[3 + 2 * n + m]
  for _ = 1, math.min(ready_now, 16) do
    redis.call('LPUSH', wake, '1')
  end
  redis.call('LTRIM', wake, 0, 15)
end

-- Pass 4: count the written jobs against their limits.
for _, limit in ipairs(limits) do
  if #limit.jobs > 0 then
    redis.call('ZREMRANGEBYSCORE', limit.key, '-inf', limit.clock - limit.window)
    for _, i in ipairs(limit.jobs) do
      redis.call('ZADD', limit.key, limit.clock, results[i][2])
    end
    redis.call('PEXPIRE', limit.key, limit.window)
  end
end
return results
