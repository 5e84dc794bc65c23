-- replay.lua: queue a dead letter again under its own id, attempts reset.
--
-- KEYS[1]  the job hash   KEYS[2]  the queue's dead set   KEYS[3]  the queue's ready list
-- KEYS[4]  the job's idempotency record (the job hash again when it has no key)
-- ARGV[1]  the job id     ARGV[2]  now, ms
-- ARGV[3]  a replacement payload, already checked ("" = keep the stored one)
-- ARGV[4]  a note for the job's operator history ("<time> replayed by <operator>")
-- ARGV[5]  job-hash key prefix ("<prefix>:<id>"), to see whether the job a record names exists
--
-- Returns 1 when replayed, 0 when the job is not a dead letter (any more), -1 when its
-- idempotency key now names another job that exists: the producer sent it again after this
-- one died, and replaying this one would deliver twice (the key stays with the newer job).
-- When the key is free (no record, or one naming a job gone since), the replayed job claims it
-- again, with the fingerprint and expiry bury.lua kept on its hash: a producer retrying with
-- the key after the replay gets this job back, not a second delivery. A letter buried before
-- those fields existed, or past its key's 24 h, replays without a key.
-- The attempt records stay, so the history shows the attempts before and after the replay.

local status = redis.call('HGET', KEYS[1], 'status')
if (status ~= 'dead' and status ~= 'expired') or not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  return 0
end
if KEYS[4] ~= KEYS[1] then
  local record = redis.call('GET', KEYS[4])
  if record and string.sub(record, -(#ARGV[1] + 1)) ~= ' ' .. ARGV[1] then
    local space = string.find(record, ' ', 1, true)
    local other = space and string.sub(record, space + 1) or ''
    if redis.call('EXISTS', ARGV[5] .. ':' .. other) == 1 then
      return -1
    end
    record = nil
  end
  if not record then
    local saved = redis.call('HMGET', KEYS[1], 'idem_fingerprint', 'idem_expires_at')
    local left = (tonumber(saved[2]) or 0) - tonumber(ARGV[2])
    if saved[1] and saved[1] ~= '' and left > 0 then
      redis.call('SET', KEYS[4], saved[1] .. ' ' .. ARGV[1], 'PX', left)
    end
  end
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[2] .. ':by:' .. (redis.call('HGET', KEYS[1], 'producer') or ''), ARGV[1])
redis.call('HDEL', KEYS[1], 'reason', 'dead_at', 'finished_at', 'last_error', 'provider_message_id',
  'idem_fingerprint', 'idem_expires_at')
redis.call('HSET', KEYS[1], 'status', 'queued', 'attempts', 0, 'run_at', ARGV[2])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'payload', ARGV[3])
end
local notes = redis.call('HGET', KEYS[1], 'notes')
if notes and notes ~= '' then
  notes = notes .. '\n' .. ARGV[4]
else
  notes = ARGV[4]
end
redis.call('HSET', KEYS[1], 'notes', notes)
redis.call('LPUSH', KEYS[3], ARGV[1])
return 1
