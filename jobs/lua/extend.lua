-- extend.lua: renew the leases of jobs a worker is still running.
--
-- KEYS[1]  active sorted set (score: lease deadline, ms)
-- ARGV[1]  new deadline, ms since the epoch
-- ARGV[2..] job ids
--
-- Returns how many leases were renewed. Only ids still in the active set are touched (XX):
-- a job whose lease was already lost and recovered is not taken back.
local renewed = 0
for i = 2, #ARGV do
  renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', ARGV[1], ARGV[i])
end
return renewed
