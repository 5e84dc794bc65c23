-- bury.lua: shared by fetch.lua and finish.lua (prepended to each when loaded).
-- bury(dead_key, job_key, id, reason, now, idem_prefix): marks a job dead (or expired) with
-- its reason, indexes it in the queue's dead set by time, and deletes its idempotency record
-- so that the producer's key can enqueue anew (a dead letter never blocks a new job).
local function bury(dead_key, job_key, id, reason, now, idem_prefix)
  local status = 'dead'
  if reason == 'expired' then
    status = 'expired'
  end
  redis.call('HSET', job_key, 'status', status, 'reason', reason, 'dead_at', now, 'finished_at', now)
  redis.call('ZADD', dead_key, now, id)
  local idem = redis.call('HMGET', job_key, 'producer', 'idempotency_key')
  if idem[2] and idem[2] ~= '' then
    redis.call('DEL', idem_prefix .. ':' .. idem[1] .. ':' .. idem[2])
  end
end

