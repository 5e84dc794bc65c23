-- heartbeat.lua: record one worker's heartbeat in the fleet registry, and prune it a little.
--
-- KEYS[1]  the registry HASH (`Keys::workers`): field worker id, value its heartbeat (JSON)
-- ARGV[1]  the worker's id
-- ARGV[2]  its heartbeat, JSON, without `last_seen_at`, which this script stamps on Redis's
--          clock (ms), so that every reader judges "alive" on one clock
-- ARGV[3]  cap: the most entries the registry keeps
-- ARGV[4]  gone after, ms: an entry not seen for this long is removed
-- ARGV[5]  sample: the most other entries looked at per call
--
-- Returns the number of entries removed.
--
-- Bounded work: at most ARGV[5] random entries are read (HRANDFIELD), never the whole hash.
-- Those gone for longer than ARGV[4], or unreadable, are removed; while the hash is over its
-- cap the stalest of the sample go too. Entries of live workers come back with their next
-- heartbeat, so a crash-looping worker, which leaves one entry per start, never grows the
-- registry past the cap.

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local id = ARGV[1]
local beat = cjson.decode(ARGV[2])
beat.last_seen_at = now
redis.call('HSET', KEYS[1], id, cjson.encode(beat))

local cap = tonumber(ARGV[3])
local gone_before = now - tonumber(ARGV[4])
local sample = redis.call('HRANDFIELD', KEYS[1], tonumber(ARGV[5]), 'WITHVALUES')
local removed = 0
local others = {}
for i = 1, #sample, 2 do
  local field = sample[i]
  if field ~= id then
    local ok, entry = pcall(cjson.decode, sample[i + 1])
    local seen = ok and type(entry) == 'table' and tonumber(entry.last_seen_at) or nil
    if not seen or seen < gone_before then
      removed = removed + redis.call('HDEL', KEYS[1], field)
    else
      others[#others + 1] = {field, seen}
    end
  end
end
local over = redis.call('HLEN', KEYS[1]) - cap
if over > 0 then
  table.sort(others, function(a, b) return a[2] < b[2] end)
  for i = 1, math.min(over, #others) do
    removed = removed + redis.call('HDEL', KEYS[1], others[i][1])
  end
end
return removed
