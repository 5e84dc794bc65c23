-- bury.lua: shared by fetch.lua and finish.lua (prepended to each when loaded).
-- bury(dead_key, job_key, id, reason, now, idem_prefix): marks a job dead (or expired) with
-- its reason, indexes it in the queue's dead set by time, and deletes its idempotency record
-- so that the producer's key can enqueue anew (a dead letter never blocks a new job); the
-- keys of schedule ticks (`schedule:<name>:<tick>`) are kept until they expire.
local function bury(dead_key, job_key, id, reason, now, idem_prefix)
  local status = 'dead'
  if reason == 'expired' then
    status = 'expired'
  end
  redis.call('HSET', job_key, 'status', status, 'reason', reason, 'dead_at', now, 'finished_at', now)
  redis.call('ZADD', dead_key, now, id)
  local idem = redis.call('HMGET', job_key, 'producer', 'idempotency_key')
  -- A schedule's tick keeps its key: another worker computing the same tick must find it
  -- taken, or a tick whose job died at once would fire again.
  if idem[1] and idem[2] and idem[2] ~= '' and string.sub(idem[2], 1, 9) ~= 'schedule:' then
    -- Only while the record still names this job: past its 24 h the key may belong to a newer one.
    local idem_key = idem_prefix .. ':' .. idem[1] .. ':' .. idem[2]
    local record = redis.call('GET', idem_key)
    if record and string.sub(record, -(#id + 1)) == ' ' .. id then
      redis.call('DEL', idem_key)
    end
  end
end

