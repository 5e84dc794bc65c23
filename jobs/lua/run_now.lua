-- run_now.lua: start a waiting job (scheduled, or waiting out a retry backoff) at once.
--
-- KEYS[1]  ready list (the job goes to its own lane and group, lanes.lua)
-- KEYS[2]  scheduled sorted set    KEYS[3]  retry sorted set
-- KEYS[4]  wake-up list (enqueue.lua's: an idle worker blocks on it)
-- ARGV[1]  record key prefix ("<prefix>:<id>")
-- ARGV[2]  job id
--
-- Returns "moved" when the job now waits at the popping end of the ready list (status
-- queued, run-at now, one wake-up marker pushed), its status when it was not waiting (queued,
-- running, or finished: nothing changed), or "missing".
-- A job a fetch already promoted (its id in the ready list, its record still scheduled or
-- retrying) is only marked queued: it is next in line already.

local now = clock_ms()
local id = ARGV[2]
local key = ARGV[1] .. ':' .. id
local record = load_record(key)
if not record then
  return 'missing'
end
local set
if record.st == 'scheduled' then
  set = KEYS[2]
elseif record.st == 'retrying' then
  set = KEYS[3]
else
  return record.st
end
if redis.call('ZREM', set, id) == 1 then
  push(KEYS[1], record, id, true)
  redis.call('LPUSH', KEYS[4], '1')
  redis.call('LTRIM', KEYS[4], 0, 15)
end
record.st = 'queued'
record.ra = now
save_record(key, record)
return 'moved'
