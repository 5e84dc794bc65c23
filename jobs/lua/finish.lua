-- finish.lua: record the outcome of attempts of one queue, in one call.
--
-- KEYS[1]  retry sorted set (score: run-at, ms)
-- KEYS[2]  active sorted set    KEYS[3]  dead sorted set (score: dead_at, ms)
-- KEYS[4]  the per-minute outcome counters' key of `now` (see stats below)
-- KEYS[5]  succeeded stream     KEYS[6]  cancelled stream (`QueueKeys::succeeded`, `cancelled`)
-- ARGV[1]  the call, MessagePack (`queue::FinishCall`):
--            now (ms); retention (ms): how long a succeeded job stays readable, 0 = not at all;
--            dead_cap: the most dead jobs kept, the oldest beyond it evicted; dead_cap_per_producer:
--            the most dead jobs of one producer kept (its dead set is "<KEYS[3]>:by:<producer>"),
--            so a producer's flood never evicts another producer's letters; dead_age (ms): dead
--            jobs older than this are evicted; job_prefix ("<prefix>:<id>"); idem_prefix
--            ("<prefix>:<producer>:<key>")
--            done[i]: id; token (the lease token fetch.lua handed out, the record's ln); outcome, tagged:
--            {t = "succeeded"} | {t = "retry", at (ms)} | {t = "dead", reason}; error (absent:
--            none); started_at, when the handler started; finished_at; provider_id (absent: none)
--
-- Returns {recorded, stale, evicted}: an outcome is stale when its lease is not the job's
-- current one (it was lost, and the job recovered, replayed or leased again); stale outcomes
-- change nothing.
-- A succeeded job's record shrinks to what the status answer needs (no payload, no
-- idempotency key, no trace; its attempt history only when an attempt failed) and expires after
-- the retention, or after its idempotency record when that lives longer, so a producer resending
-- the key is answered with this job instead of a second send. A dead job's idempotency record
-- is deleted, so the key can enqueue anew. The outcomes are counted per minute in KEYS[4]
-- (fields succeeded, failed), kept two hours.
-- The succeeded ids are indexed in KEYS[5] by one XADD per call (fields: the ids), trimmed to
-- the retention, and only when the retention is above 0. A retry outcome of a job whose
-- cancellation was asked while it ran (the record's cx) ends it `cancelled` instead (indexed in
-- KEYS[6]); a success stays `succeeded`, a dead letter `dead`.

local call = cmsgpack.unpack(ARGV[1])
local now = call.now
local prefix = call.job_prefix
local recorded, stale, evicted = 0, 0, 0
local succeeded, failed = 0, 0
local buried = {}
local succeeded_ids, cancelled_ids, cancelled_keep = {}, {}, 0

for _, done in ipairs(call.done) do
  local id = done.id
  local key = prefix .. ':' .. id
  local record = load_record(key)
  if not record or record.st ~= 'running' or record.ln ~= done.token or redis.call('ZREM', KEYS[2], id) == 0 then
    stale = stale + 1
  else
    recorded = recorded + 1
    record.sa = done.started_at
    local outcome = done.outcome
    if done.error then
      record.le = done.error
    end
    if done.provider_id then
      record.pm = done.provider_id
    end
    if outcome.t == 'succeeded' then
      succeeded = succeeded + 1
      succeeded_ids[#succeeded_ids + 1] = id
      local kept = {st = 'succeeded', at = record.at, ma = record.ma, pr = record.pr, ca = record.ca, ra = record.ra,
        sa = record.sa, fa = done.finished_at, le = record.le, pm = record.pm, pi = record.pi, gr = record.gr, dv = record.dv}
      if record.hs then
        add_attempt(record, done.finished_at, done.error)
        kept.hs = record.hs
      end
      local ttl = call.retention
      if record.ik and record.pr then
        ttl = math.max(ttl, redis.call('PTTL', call.idem_prefix .. ':' .. record.pr .. ':' .. record.ik))
      end
      if ttl > 0 then
        redis.call('SET', key, cmsgpack.pack(kept), 'PX', ttl)
      else
        redis.call('DEL', key)
      end
    else
      failed = failed + 1
      add_attempt(record, done.finished_at, done.error)
      if outcome.t == 'retry' and record.cx then
        cancel_record(key, record, now, call.idem_prefix)
        cancelled_ids[#cancelled_ids + 1] = id
        cancelled_keep = math.max(cancelled_keep, record.cr or 0)
      elseif outcome.t == 'retry' then
        record.st = 'retrying'
        record.ra = outcome.at
        redis.call('ZADD', KEYS[1], outcome.at, id)
        save_record(key, record)
      else
        bury(record, KEYS[3], id, outcome.reason, now, call.idem_prefix)
        buried[record.pr or ''] = true
        save_record(key, record)
      end
    end
  end
end

if recorded > 0 then
  if succeeded > 0 then redis.call('HINCRBY', KEYS[4], 'succeeded', succeeded) end
  if failed > 0 then redis.call('HINCRBY', KEYS[4], 'failed', failed) end
  redis.call('PEXPIRE', KEYS[4], 7200000)
end
if call.retention > 0 then
  index_finished(KEYS[5], succeeded_ids, now, call.retention)
end
index_finished(KEYS[6], cancelled_ids, now, math.max(cancelled_keep, CANCELLED_MIN_KEEP))

-- Keep the dead letters bounded: per producer (of the producers that buried a letter in this
-- call), then by age, then by count, oldest first; at most 1000 per rule and call. Each
-- eviction is counted and returned so the worker logs a warning and a metric; nothing goes
-- silently.
local function evict(ids)
  for _, id in ipairs(ids) do
    local key = prefix .. ':' .. id
    local record = load_record(key)
    redis.call('ZREM', KEYS[3], id)
    redis.call('ZREM', KEYS[3] .. ':by:' .. (record and record.pr or ''), id)
    redis.call('DEL', key)
    evicted = evicted + 1
  end
end
local budget = 1000
for producer in pairs(buried) do
  local set = KEYS[3] .. ':by:' .. producer
  local over = redis.call('ZCARD', set) - call.dead_cap_per_producer
  if over > 0 and budget > 0 then
    local oldest = redis.call('ZRANGE', set, 0, math.min(over, budget) - 1)
    budget = budget - #oldest
    local letters = {}
    for _, id in ipairs(oldest) do
      -- A member that is no longer a dead letter (replayed, deleted) is only dropped.
      redis.call('ZREM', set, id)
      if redis.call('ZSCORE', KEYS[3], id) then
        letters[#letters + 1] = id
      end
    end
    evict(letters)
  end
end
evict(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - call.dead_age, 'LIMIT', 0, 1000))
local over = redis.call('ZCARD', KEYS[3]) - call.dead_cap
if over > 0 then
  evict(redis.call('ZRANGE', KEYS[3], 0, math.min(over, 1000) - 1))
end

return {recorded, stale, evicted}
