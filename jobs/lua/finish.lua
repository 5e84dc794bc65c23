-- finish.lua: record the outcome of attempts of one queue, in one call.
--
-- KEYS[1]  ready list (unused; declared so every script names the queue's keys alike)
-- KEYS[2]  scheduled sorted set
-- KEYS[3]  active sorted set   KEYS[4]  dead sorted set (score: dead_at, ms)
-- ARGV[1]  now, ms since the epoch
-- ARGV[2]  retention, ms: how long a finished job (succeeded) stays readable
-- ARGV[3]  dead-letter cap: the most dead jobs kept; the oldest beyond it are evicted
-- ARGV[4]  dead-letter age, ms: dead jobs older than this are evicted
-- ARGV[5]  job-hash key prefix ("<prefix>:<id>"; attempts list "<prefix>:<id>:attempts")
-- ARGV[6]  idempotency key prefix ("<prefix>:<producer>:<key>")
-- ARGV[7]  n, the number of outcomes
-- ARGV[8+7(i-1) .. 14+7(i-1)], for outcome i:
--          id, attempt (the number fetch.lua handed out), outcome, error ("" = none),
--          run_at ms (for "retry"; else "0"), attempt record JSON {started_at, finished_at, error, worker},
--          provider message id ("" = none; kept on the job as provider_message_id)
-- ARGV[8+7n] stats-key prefix: the recorded outcomes are counted per minute in
--          "<prefix>:<minute since the epoch>" (fields succeeded, failed), kept two hours
-- ARGV[9+7n] per-producer dead-letter cap (absent = none): the most dead jobs of one producer
--          kept (its dead set is "<KEYS[4]>:by:<producer>"); a producer over it loses its own
--          oldest letters first, so its flood never evicts another producer's letters
--          outcome: "succeeded" | "retry" | "exhausted" | "permanent" | "expired" | "panicked"
--
-- Returns {recorded, stale, evicted}: an outcome is stale when the job's lease was lost and
-- it was leased again (another attempt now owns it); stale outcomes change nothing.
-- A dead job's idempotency record is deleted, so the key can enqueue anew.

local now = tonumber(ARGV[1])
local retention = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local max_age = tonumber(ARGV[4])
local prefix = ARGV[5]
local idem_prefix = ARGV[6]
local n = tonumber(ARGV[7])
local STRIDE = 7

local recorded, stale, evicted = 0, 0, 0
local succeeded, failed = 0, 0
local buried = {}

for i = 1, n do
  local a = 7 + STRIDE * (i - 1)
  local id, attempt, outcome, err, run_at, record, provider_id =
    ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7]
  local key = prefix .. ':' .. id
  local current = redis.call('HMGET', key, 'status', 'attempts')
  if current[1] ~= 'running' or current[2] ~= attempt or not redis.call('ZSCORE', KEYS[3], id) then
    stale = stale + 1
  else
    recorded = recorded + 1
    redis.call('ZREM', KEYS[3], id)
    redis.call('RPUSH', key .. ':attempts', record)
    if err ~= '' then
      redis.call('HSET', key, 'last_error', err)
    end
    if provider_id ~= '' then
      redis.call('HSET', key, 'provider_message_id', provider_id)
    end
    if outcome == 'succeeded' then
      succeeded = succeeded + 1
    else
      failed = failed + 1
    end
    if outcome == 'succeeded' then
      redis.call('HSET', key, 'status', 'succeeded', 'finished_at', now)
      redis.call('PEXPIRE', key, retention)
      redis.call('PEXPIRE', key .. ':attempts', retention)
    elseif outcome == 'retry' then
      redis.call('HSET', key, 'status', 'retrying', 'run_at', run_at)
      redis.call('ZADD', KEYS[2], tonumber(run_at), id)
    else
      buried[bury(KEYS[4], key, id, outcome, now, idem_prefix)] = true
    end
  end
end

local stats_prefix = ARGV[8 + STRIDE * n]
if stats_prefix and recorded > 0 then
  local bucket = stats_prefix .. ':' .. math.floor(now / 60000)
  if succeeded > 0 then redis.call('HINCRBY', bucket, 'succeeded', succeeded) end
  if failed > 0 then redis.call('HINCRBY', bucket, 'failed', failed) end
  redis.call('PEXPIRE', bucket, 7200000)
end

-- Keep the dead letters bounded: per producer (of the producers that buried a letter in this
-- call), then by age, then by count, oldest first; at most 1000 per rule and call. Each
-- eviction is counted and returned so the worker logs a warning and a metric; nothing goes
-- silently.
local function evict(ids)
  for _, id in ipairs(ids) do
    local key = prefix .. ':' .. id
    redis.call('ZREM', KEYS[4], id)
    redis.call('ZREM', KEYS[4] .. ':by:' .. (redis.call('HGET', key, 'producer') or ''), id)
    redis.call('DEL', key, key .. ':attempts')
    evicted = evicted + 1
  end
end
local per_producer = tonumber(ARGV[9 + STRIDE * n])
if per_producer then
  local budget = 1000
  for producer in pairs(buried) do
    local set = KEYS[4] .. ':by:' .. producer
    local over = redis.call('ZCARD', set) - per_producer
    if over > 0 and budget > 0 then
      local oldest = redis.call('ZRANGE', set, 0, math.min(over, budget) - 1)
      budget = budget - #oldest
      local letters = {}
      for _, id in ipairs(oldest) do
        -- A member that is no longer a dead letter (replayed, deleted) is only dropped.
        redis.call('ZREM', set, id)
        if redis.call('ZSCORE', KEYS[4], id) then
          table.insert(letters, id)
        end
      end
      evict(letters)
    end
  end
end
evict(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now - max_age, 'LIMIT', 0, 1000))
local over = redis.call('ZCARD', KEYS[4]) - cap
if over > 0 then
  evict(redis.call('ZRANGE', KEYS[4], 0, math.min(over, 1000) - 1))
end

return {recorded, stale, evicted}
