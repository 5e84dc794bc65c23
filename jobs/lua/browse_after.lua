-- browse_after.lua: where a cursor page of a ZSET (scheduled, retry, active) resumes, read only.
--
-- KEYS[1] the ZSET
-- ARGV[1] the score of the last member shown (a number, as text)
-- ARGV[2] the last member shown
-- ARGV[3] how many members to return (the page size plus one, to tell whether more follow)
--
-- Returns a flat array member, score, member, score, ... of the members that sort after
-- (ARGV[1], ARGV[2]) in the set's own order (score, then member bytes). When the member is
-- still there with the same score, its rank says where (ZRANK, O(log N)); when it has left or
-- moved, the first member after the pair is found by score (ZCOUNT, O(log N)) and, among the
-- members sharing that score, by a binary search on ranks (O(log N) per step, log of the tie
-- count steps). The work never grows with the size of the set beyond log N.

-- a <= b in byte order (Lua's own comparison follows the server's locale).
local function bytes_le(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = a:byte(i), b:byte(i)
    if x ~= y then
      return x < y
    end
  end
  return #a <= #b
end

local key, score, id, count = KEYS[1], tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])

local start
local rank = redis.call('ZRANK', key, id)
local current = rank and tonumber(redis.call('ZSCORE', key, id))
if rank and current == score then
  start = rank + 1
else
  -- Members with a lower score come first; then the ties, ordered by member bytes.
  local lo = redis.call('ZCOUNT', key, '-inf', '(' .. ARGV[1])
  local hi = redis.call('ZCOUNT', key, '-inf', ARGV[1])
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local member = redis.call('ZRANGE', key, mid, mid)[1]
    if bytes_le(member, id) then
      lo = mid + 1
    else
      hi = mid
    end
  end
  start = lo
end
return redis.call('ZRANGE', key, start, start + count - 1, 'WITHSCORES')
