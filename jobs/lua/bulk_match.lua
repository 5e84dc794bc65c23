-- bulk_match.lua: which of some ids of one queue a bulk cancel's filter selects, read only.
--
-- KEYS[1]  the list or set the ids were read from (routes the call to the queue's slot)
-- ARGV[1]  record key prefix ("<prefix>:<id>")
-- ARGV[2]  state: "queued" (a promoted delayed job or retry waits in the ready list with its
--          old status, so scheduled and retrying records match too), "scheduled", "retrying"
-- ARGV[3]  producer ("": any)
-- ARGV[4]  created at or before, ms ("": any time)
-- ARGV[5..] ids (the caller sends at most 500)
--
-- Returns the ids selected, in order. Only ids travel back: a record (its payload up to
-- 256 KiB) never leaves Redis, so a walk over a million jobs sends ids, not records.

local prefix, state, producer, created_by = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local states = state == 'queued' and {queued = true, scheduled = true, retrying = true} or {[state] = true}
local selected = {}
for i = 5, #ARGV do
  local record = load_record(prefix .. ':' .. ARGV[i])
  if record and states[record.st] and (producer == '' or record.pr == producer)
      and (not created_by or (record.ca or 0) <= created_by) then
    selected[#selected + 1] = ARGV[i]
  end
end
return selected
