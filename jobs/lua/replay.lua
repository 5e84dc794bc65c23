-- replay.lua: queue a dead letter again under its own id, attempts reset.
--
-- KEYS[1]  the job's record   KEYS[2]  the queue's dead set   KEYS[3]  the queue's ready list (the job goes to its own lane and group, lanes.lua)
-- KEYS[4]  the job's idempotency record (the job's record key again when it has no key)
-- KEYS[5]  the queue's wake-up list: one marker (at most 16 kept), so an idle worker runs the
--          replayed job at once rather than at its next poll
-- ARGV[1]  the job id     ARGV[2]  now, ms
-- ARGV[3]  a replacement payload, already checked ("" = keep the stored one)
-- ARGV[4]  a note for the job's operator history ("<time> replayed by <operator>")
-- ARGV[5]  record key prefix ("<prefix>:<id>"), to see whether the job a record names exists
--
-- Returns 1 when replayed, 0 when the job is not a dead letter (any more), -1 when its
-- idempotency key now names another job that exists: the producer sent it again after this
-- one died, and replaying this one would deliver twice (the key stays with the newer job).
-- When the key is free (no record, or one naming a job gone since), the replayed job claims it
-- again, with the fingerprint and expiry bury() kept on its record: a producer retrying with
-- the key after the replay gets this job back, not a second delivery. A letter past its key's
-- 24 h replays without a key.
-- The attempt history stays, so it shows the attempts before and after the replay. A webhook's
-- first deferral (df) is cleared, and so is a delivery report (dv): like the provider's message
-- id (pm), it was about a message of before; the replay's own send gets its own report.

local record = load_record(KEYS[1])
if not record or not is_dead_letter(record) or not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  return 0
end
local now = tonumber(ARGV[2])
if KEYS[4] ~= KEYS[1] then
  local held = redis.call('GET', KEYS[4])
  if held and string.sub(held, -(#ARGV[1] + 1)) ~= ' ' .. ARGV[1] then
    local space = string.find(held, ' ', 1, true)
    local other = space and string.sub(held, space + 1) or ''
    if redis.call('EXISTS', ARGV[5] .. ':' .. other) == 1 then
      return -1
    end
    held = nil
  end
  if not held then
    local left = (record.fx or 0) - now
    if record.fp and record.fp ~= '' and left > 0 then
      redis.call('SET', KEYS[4], record.fp .. ' ' .. ARGV[1], 'PX', left)
    end
  end
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[2] .. ':by:' .. (record.pr or ''), ARGV[1])
record.st = 'queued'
record.at = 0
record.ra = now
record.rs, record.da, record.fa, record.le, record.pm, record.fp, record.fx = nil, nil, nil, nil, nil, nil, nil
-- A webhook's wait for its destination starts afresh: a letter that expired waiting
-- (WEBHOOK_MAX_DEFERRAL_SECONDS) would otherwise be overdue again at its first deferral.
record.df = nil
record.dv = nil
if ARGV[3] ~= '' then
  record.pl = ARGV[3]
end
local notes = record.nt or {}
notes[#notes + 1] = ARGV[4]
record.nt = notes
save_record(KEYS[1], record)
push(KEYS[3], record, ARGV[1], false)
redis.call('LPUSH', KEYS[5], '1')
redis.call('LTRIM', KEYS[5], 0, 15)
return 1
