-- bury.lua: shared by fetch.lua and finish.lua (prepended to each when loaded).
-- bury(dead_key, job_key, id, reason, now, idem_prefix): marks a job dead (or expired) with
-- its reason, indexes it in the queue's dead set by time (and in its producer's dead set,
-- "<dead_key>:by:<producer>", for the per-producer cap), and deletes its idempotency record
-- so that the producer's key can enqueue anew (a dead letter never blocks a new job); the
-- record's fingerprint and expiry stay on the job hash (`idem_fingerprint`,
-- `idem_expires_at`, ms) so that replay.lua can claim the key again for it. The keys of
-- schedule ticks (`schedule:<name>:<tick>`) are kept until they expire.
-- Returns the job's producer ("" when it has none).
local function bury(dead_key, job_key, id, reason, now, idem_prefix)
  local status = 'dead'
  if reason == 'expired' then
    status = 'expired'
  end
  redis.call('HSET', job_key, 'status', status, 'reason', reason, 'dead_at', now, 'finished_at', now)
  redis.call('ZADD', dead_key, now, id)
  local idem = redis.call('HMGET', job_key, 'producer', 'idempotency_key')
  redis.call('ZADD', dead_key .. ':by:' .. (idem[1] or ''), now, id)
  -- A schedule's tick keeps its key: another worker computing the same tick must find it
  -- taken, or a tick whose job died at once would fire again.
  if idem[1] and idem[2] and idem[2] ~= '' and string.sub(idem[2], 1, 9) ~= 'schedule:' then
    -- Only while the record still names this job: past its 24 h the key may belong to a newer one.
    local idem_key = idem_prefix .. ':' .. idem[1] .. ':' .. idem[2]
    local record = redis.call('GET', idem_key)
    if record and string.sub(record, -(#id + 1)) == ' ' .. id then
      local ttl = redis.call('PTTL', idem_key)
      if ttl > 0 then
        local fingerprint = string.sub(record, 1, #record - #id - 1)
        redis.call('HSET', job_key, 'idem_fingerprint', fingerprint, 'idem_expires_at', now + ttl)
      end
      redis.call('DEL', idem_key)
    end
  end
  return idem[1] or ''
end
