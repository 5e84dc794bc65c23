-- lanes.lua: prepended (after record.lua) to every script that pushes to or pops from a
-- queue's ready lists. `QueueKeys` (jobs/src/keys.rs) names the same keys.
--
-- A queue has one lane per priority, each named after the ready list `<ready>`:
--   high `<ready>:high`, normal `<ready>` (the list of before lanes existed), low `<ready>:low`.
-- Within a lane:
--   `<lane>`            LIST of ungrouped ids (push on the left, pop on the right: FIFO)
--   `<lane>:g:<group>`  LIST of one group's ids, the same way round
--   `<lane>:groups`     LIST, the rotation: each group whose list is non-empty, once, plus the
--                       member "" standing for the ungrouped list while the rotation holds a
--                       group and the ungrouped list is non-empty. Popped on the right,
--                       served members go back on the left: round-robin.
-- `<ready>:grouped`     STRING, how many ids wait in the queue's group lists (all lanes), so
--                       the depth stays O(1): the lanes' LLENs plus it, less `<ready>:cancelled`.
-- A record's lane is its `pi` ("h", "l"; absent: normal) and group its `gr` (absent: none).

local function lane_of(ready, priority)
  if priority == 'h' then
    return ready .. ':high'
  elseif priority == 'l' then
    return ready .. ':low'
  end
  return ready
end

-- The queue's lanes, in the order a fetch serves them.
local function lanes_of(ready)
  return {ready .. ':high', ready, ready .. ':low'}
end

-- Puts `member` in a lane's rotation: at the popping end when `front`.
local function rotate_in(rotation, member, front)
  if front then
    redis.call('RPUSH', rotation, member)
  else
    redis.call('LPUSH', rotation, member)
  end
end

-- push_ids(ready, priority, group, ids, front): puts ids (one group, or none) in their lane:
-- at the pushing end, or at the popping end when `front` (promoted, recovered, released,
-- run-now jobs: they are next), in the order given (with `front`, the last one given is the
-- next one out). An ungrouped push costs one command, plus an EXISTS when the list was empty.
local function push_ids(ready, priority, group, ids, front)
  if #ids == 0 then
    return
  end
  local lane = lane_of(ready, priority)
  local rotation = lane .. ':groups'
  local op = front and 'RPUSH' or 'LPUSH'
  if group and group ~= '' then
    local length = redis.call(op, lane .. ':g:' .. group, unpack(ids))
    redis.call('INCRBY', ready .. ':grouped', #ids)
    if length == #ids then
      -- The group's list was empty: it joins the rotation; a rotation starting now takes the
      -- ungrouped list in too when that one is waiting.
      if redis.call('LLEN', rotation) == 0 and redis.call('LLEN', lane) > 0 then
        rotate_in(rotation, '', false)
      end
      rotate_in(rotation, group, front)
    end
  else
    local length = redis.call(op, lane, unpack(ids))
    if length == #ids and redis.call('EXISTS', rotation) == 1 then
      rotate_in(rotation, '', front)
    end
  end
end

-- push(ready, record, id, front): one job, in the lane and group its record names.
local function push(ready, record, id, front)
  push_ids(ready, record.pi, record.gr, {id}, front)
end

-- Pops up to `n` ids of one lane into `out`; returns how many of them came from group lists.
-- An empty rotation costs one LLEN on top of today's RPOP. Otherwise each id costs about three
-- commands (rotate the member, pop its list, look whether the list is empty), whatever the
-- number of groups; a rotation of one member is served in one run.
local function pop_lane(lane, n, out)
  local rotation = lane .. ':groups'
  local members = redis.call('LLEN', rotation)
  local grouped = 0
  -- Each turn either takes an id or drops a member; a dropped member was empty (a stale
  -- member never outlives one turn), so 2n + 2 turns bound the work whatever the rotation holds.
  local turns = 2 * n + 2
  while #out < n and members > 0 and turns > 0 do
    turns = turns - 1
    local member = redis.call('RPOP', rotation)
    members = members - 1
    local list = member == '' and lane or (lane .. ':g:' .. member)
    if member == '' and members == 0 then
      -- The ungrouped list alone is left: the plain path below serves it.
      break
    end
    local want = members == 0 and (n - #out) or 1
    local ids = redis.call('RPOP', list, want)
    if ids then
      for _, id in ipairs(ids) do
        out[#out + 1] = id
      end
      if member ~= '' then
        grouped = grouped + #ids
      end
      if redis.call('LLEN', list) > 0 then
        redis.call('LPUSH', rotation, member)
        members = members + 1
      end
    end
  end
  if members == 0 and #out < n then
    local ids = redis.call('RPOP', lane, n - #out)
    if ids then
      for _, id in ipairs(ids) do
        out[#out + 1] = id
      end
    end
  end
  return grouped
end

-- pop(ready, n): up to `n` ids, high lane first, then normal, then low, each lane round-robin
-- over its groups. When no lane but the normal ungrouped list holds anything (the common
-- case), it costs one EXISTS on top of today's RPOP.
local function pop(ready, n)
  local out = {}
  local high, low = ready .. ':high', ready .. ':low'
  if redis.call('EXISTS', high, ready .. ':groups', low, high .. ':groups', low .. ':groups') == 0 then
    local ids = redis.call('RPOP', ready, n)
    return ids or out
  end
  local grouped = 0
  for _, lane in ipairs(lanes_of(ready)) do
    if #out >= n then
      break
    end
    grouped = grouped + pop_lane(lane, n, out)
  end
  if grouped > 0 and redis.call('DECRBY', ready .. ':grouped', grouped) <= 0 then
    -- No grouped job left: an idle queue keeps no counter.
    redis.call('DEL', ready .. ':grouped')
  end
  return out
end

-- Whether any lane holds an id (a rotation holds members only while a group list has ids).
local function any_ready(ready)
  local high, low = ready .. ':high', ready .. ':low'
  return redis.call('EXISTS', ready, high, low, ready .. ':groups', high .. ':groups', low .. ':groups') > 0
end
