-- extend.lua: renew the leases of jobs a worker is still running.
--
-- KEYS[1]  active sorted set (score: lease deadline, ms)
-- ARGV[1]  lease, ms: the new deadline is Redis's own clock (TIME) + lease
-- ARGV[2]  record key prefix ("<prefix>:<id>")
-- ARGV[2k+1], ARGV[2k+2] (k = 1..): job id, the lease token fetch.lua handed out (the record's ln)
--
-- Returns how many leases were renewed. A lease is renewed only while it is still the job's
-- current one and the job is still in the active set (XX): a job whose lease was lost and
-- taken by another holder (another worker, or this one again) is not kept alive by a stale
-- holder, and a job already recovered is not taken back.
local deadline = clock_ms() + tonumber(ARGV[1])
local renewed = 0
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], tonumber(ARGV[i + 1])
  local record = load_record(ARGV[2] .. ':' .. id)
  if record and record.st == 'running' and record.ln == token then
    renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', deadline, id)
  end
end
return renewed
