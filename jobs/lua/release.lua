-- release.lua: put back jobs a stopping worker leased but will not finish.
--
-- KEYS[1]  ready list (the normal lane: each job goes back to its own lane and group, lanes.lua)
-- KEYS[2]  active sorted set
-- KEYS[3]  cancelled stream (`QueueKeys::cancelled`)
-- ARGV[1]  record key prefix ("<prefix>:<id>")
-- ARGV[2k], ARGV[2k+1] (k = 1..): job id, the lease token fetch.lua handed out (the record's ln)
--
-- Returns how many jobs were put back: to the popping end of the ready list, so they run next,
-- with the attempt not counted. A job whose lease was lost and taken by another holder is left alone.
-- A job whose cancellation was asked while it ran (the record's cx) is not put back: its
-- delivery never started, so it ends `cancelled` (indexed in KEYS[3]); it counts as released.
local cancelled, cancelled_keep = {}, 0
local released = 0
for i = 2, #ARGV, 2 do
  local id, token = ARGV[i], tonumber(ARGV[i + 1])
  local key = ARGV[1] .. ':' .. id
  local record = load_record(key)
  if record and record.st == 'running' and record.ln == token and redis.call('ZREM', KEYS[2], id) == 1 then
    record.at = math.max((record.at or 1) - 1, 0)
    if record.cx then
      cancel_record(key, record, clock_ms(), queue_key(ARGV[1], 'idem'))
      cancelled[#cancelled + 1] = id
      cancelled_keep = math.max(cancelled_keep, record.cr or 0)
    else
      record.st = 'queued'
      save_record(key, record)
      push(KEYS[1], record, id, true)
    end
    released = released + 1
  end
end
index_finished(KEYS[3], cancelled, clock_ms(), math.max(cancelled_keep, CANCELLED_MIN_KEEP))
return released
