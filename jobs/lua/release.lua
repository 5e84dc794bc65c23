-- release.lua: put back jobs a stopping worker leased but will not finish.
--
-- KEYS[1]  ready list       KEYS[2]  active sorted set
-- ARGV[1]  record key prefix ("<prefix>:<id>")
-- ARGV[2k], ARGV[2k+1] (k = 1..): job id, the lease token fetch.lua handed out (the record's ln)
--
-- Returns how many jobs were put back: to the popping end of the ready list, so they run next,
-- with the attempt not counted. A job whose lease was lost and taken by another holder is left alone.
local released = 0
for i = 2, #ARGV, 2 do
  local id, token = ARGV[i], tonumber(ARGV[i + 1])
  local key = ARGV[1] .. ':' .. id
  local record = load_record(key)
  if record and record.st == 'running' and record.ln == token and redis.call('ZREM', KEYS[2], id) == 1 then
    record.st = 'queued'
    record.at = math.max((record.at or 1) - 1, 0)
    save_record(key, record)
    redis.call('RPUSH', KEYS[1], id)
    released = released + 1
  end
end
return released
