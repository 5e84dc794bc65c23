-- oldest_ready.lua: when the oldest job still to run at the popping end of a ready list became
-- due, for the queue's latency; read only.
--
-- KEYS[1]  ready list
-- ARGV[1]  probe: how many ids at the popping end to read (the bound on this call's work)
-- ARGV[2]  record key prefix ("<prefix>:<id>")
--
-- Returns {oldest, youngest_finished}, ms since the epoch, -1 for none: the earliest due time
-- (max of created at and run at) among the ids read whose job is still to run, and the latest
-- due time among those already finished (cancelled while queued: fetch drops them when it pops
-- them). Ids without a record are passed over. Only these two numbers cross the network, never
-- a payload.

local ids = redis.call('LRANGE', KEYS[1], -tonumber(ARGV[1]), -1)
local oldest, youngest_finished = -1, -1
for _, id in ipairs(ids) do
  local record = load_record(ARGV[2] .. ':' .. id)
  if record then
    local due = math.max(record.ca or 0, record.ra or 0)
    if is_finished(record) then
      if due > youngest_finished then youngest_finished = due end
    elseif oldest < 0 or due < oldest then
      oldest = due
    end
  end
end
return {oldest, youngest_finished}
