-- extend.lua: renew the leases of jobs a worker is still running.
--
-- KEYS[1]  active sorted set (score: lease deadline, ms)
-- ARGV[1]  lease, ms: the new deadline is Redis's own clock (TIME) + lease
-- ARGV[2..] job ids
--
-- Returns how many leases were renewed. Only ids still in the active set are touched (XX):
-- a job whose lease was already lost and recovered is not taken back.
local time = redis.call('TIME')
local deadline = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) + tonumber(ARGV[1])
local renewed = 0
for i = 2, #ARGV do
  renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', deadline, ARGV[i])
end
return renewed
