-- cancel.lua: cancel jobs of one queue, each atomically.
--
-- KEYS[1]  ready list           KEYS[2]  scheduled sorted set   KEYS[3]  retry sorted set
-- KEYS[4]  cancelled stream (`QueueKeys::cancelled`: one entry per call, fields the ids)
-- KEYS[5]  ready-cancelled counter (`QueueKeys::ready_cancelled`): how many cancelled ids
--          still lie in the ready list; fetch.lua takes one off per such id it pops
-- ARGV[1]  record key prefix ("<prefix>:<id>")
-- ARGV[2]  idempotency key prefix ("<prefix>:<producer>:<key>")
-- ARGV[3]  retention, ms: how long a cancelled job stays readable (the kind's retention; at
--          least one hour, and as long as its idempotency record)
-- ARGV[4]  producer: only that producer's jobs are touched ("": any, the console)
-- ARGV[5..] job ids (the caller sends at most 500)
--
-- Returns one outcome per id, in order:
--   "cancelled"         queued, scheduled or retrying: now cancelled; it will never run
--   "was_cancelled"     cancelled before
--   "cancel_requested"  running: the record carries cx (when asked, ms) and cr (the retention);
--                       a retry, a lost lease or a release then ends it `cancelled`, while a
--                       success stays `succeeded` and a dead letter `dead`
--   "succeeded" | "dead" | "expired"   finished: nothing changed
--   "missing"           no such job in this queue, or another producer's
--
-- A queued job's id stays in the ready list (removing it would be O(length)): fetch.lua skips
-- finished records. The counter keeps the queue's depth (the lanes' LLENs and the grouped
-- counter, lanes.lua, minus it) truthful.
-- A scheduled or retrying job is taken out of its set; one a fetch already promoted (its id in
-- the ready list, its record still saying scheduled or retrying) is counted like a queued one.

local now = clock_ms()
local prefix = ARGV[1]
local idem_prefix = ARGV[2]
local retention = tonumber(ARGV[3])
local producer = ARGV[4]
local results = {}
local cancelled = {}
local in_ready = 0

for i = 5, #ARGV do
  local id = ARGV[i]
  local key = prefix .. ':' .. id
  local record = load_record(key)
  local outcome
  if not record or (producer ~= '' and record.pr ~= producer) then
    outcome = 'missing'
  elseif record.st == 'cancelled' then
    outcome = 'was_cancelled'
  elseif is_finished(record) then
    outcome = record.st
  elseif record.st == 'running' then
    record.cx = record.cx or now
    record.cr = retention
    save_record(key, record)
    outcome = 'cancel_requested'
  else
    if record.st == 'scheduled' then
      in_ready = in_ready + 1 - redis.call('ZREM', KEYS[2], id)
    elseif record.st == 'retrying' then
      in_ready = in_ready + 1 - redis.call('ZREM', KEYS[3], id)
    else
      in_ready = in_ready + 1
    end
    record.cr = retention
    cancel_record(key, record, now, idem_prefix)
    cancelled[#cancelled + 1] = id
    outcome = 'cancelled'
  end
  results[#results + 1] = outcome
end

if in_ready > 0 then
  redis.call('INCRBY', KEYS[5], in_ready)
end
index_finished(KEYS[4], cancelled, now, math.max(retention, CANCELLED_MIN_KEEP))
return results
