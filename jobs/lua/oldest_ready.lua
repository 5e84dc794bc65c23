-- oldest_ready.lua: when the oldest job still to run at the popping ends of a queue's ready
-- lists became due, for the queue's latency; read only.
--
-- KEYS[1]  ready list (the normal lane; the other lanes and group lists are named after it,
--          lanes.lua)
-- ARGV[1]  probe: how many ids at the popping end of each lane's ungrouped list to read, and
--          how many members of each lane's rotation to look at (the next id of each); the bound
--          on this call's work
-- ARGV[2]  record key prefix ("<prefix>:<id>")
--
-- Returns {oldest, youngest_finished}, ms since the epoch, -1 for none: the earliest due time
-- (max of created at and run at) among the ids read whose job is still to run, and the latest
-- due time among those already finished (cancelled while queued: fetch drops them when it pops
-- them). Ids without a record are passed over. Only these two numbers cross the network, never
-- a payload.

local probe = tonumber(ARGV[1])
local oldest, youngest_finished = -1, -1
local function consider(ids)
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
end
for _, lane in ipairs(lanes_of(KEYS[1])) do
  consider(redis.call('LRANGE', lane, -probe, -1))
  for _, member in ipairs(redis.call('LRANGE', lane .. ':groups', -probe, -1)) do
    if member ~= '' then
      consider(redis.call('LRANGE', lane .. ':g:' .. member, -1, -1))
    end
  end
end
return {oldest, youngest_finished}
