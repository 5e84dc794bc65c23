-- delivery.lua: put a provider's delivery report on one job's record (`delivery::Deliveries`).
--
-- KEYS[1]  the job's record ("<queue>:job:<id>")
-- ARGV[1]  the report, MessagePack (`delivery::StoredDelivery`): s status, a when (ms), d detail
--          (absent: none)
-- ARGV[2..] the statuses this report replaces: the weaker ones, by the precedence the caller
--          holds (complained > bounced > undelivered > delivered)
--
-- Returns "recorded" (the record holds the report now), "unchanged" (it held this status or a
-- stronger one: a provider's resend, or a late weaker report; nothing written) or "missing" (no
-- record: never enqueued, or expired; nothing written).
-- The record is rewritten whole, whatever its status (a report may come before the worker has
-- recorded the success), and keeps its expiry (KEEPTTL): a finished job still goes after its
-- retention. finish.lua and cancel_record carry `dv` into the compact records they write.

local record = load_record(KEYS[1])
if not record then
  return 'missing'
end
local report = cmsgpack.unpack(ARGV[1])
if record.dv then
  local weaker = false
  for i = 2, #ARGV do
    if record.dv.s == ARGV[i] then
      weaker = true
    end
  end
  if not weaker then
    return 'unchanged'
  end
end
record.dv = report
redis.call('SET', KEYS[1], cmsgpack.pack(record), 'KEEPTTL')
return 'recorded'
