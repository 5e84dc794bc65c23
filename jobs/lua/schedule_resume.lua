-- schedule_resume.lua: resume one paused schedule, owner-checked, and settle what it owes for
-- the ticks missed while paused, as its catch_up says (the caller computed the ticks from
-- Redis's clock, read just before, and the definition it names by updated_at):
--   catch_up "latest": due at once; the caller then fires the most recent tick missed (one,
--                      never a burst; the next scheduler pass would otherwise), or nothing
--                      when none was missed;
--   catch_up "none":   the latest tick at or before the resume counts as done (last fired tick
--                      moved forward to it) and the next look is the first tick after.
-- Resuming a schedule that is not paused changes nothing. (schedule_index.lua is prepended.)
--
-- KEYS[1..7]  as in schedule_index.lua (definitions, last, next-fire, owners, counts, by-owner,
--             paused)
-- ARGV[1]     name
-- ARGV[2]     the caller: "api:<producer>" or "" (an operator: any owner)
-- ARGV[3]     the definition's updated_at, as stored (what the caller computed the ticks from)
-- ARGV[4]     "latest" or "none"
-- ARGV[5]     "none": the latest tick at or before now, ms ("" when there is none)
-- ARGV[6]     "none": the first tick after now, ms
--
-- Returns {"resumed", the pause JSON it ended}, {"running"} (it was not paused), or, nothing
-- changed: {"changed"} (the definition is no longer the one named: compute again),
-- {"missing"}, {"taken"}, {"from_file"}.

ensure_index()
local name = ARGV[1]
local current = redis.call('HGET', KEYS[4], name)
if not current then return {'missing'} end
if ARGV[2] ~= '' and current ~= ARGV[2] then
  if current == 'file' then return {'from_file'} end
  return {'taken'}
end
local pause = redis.call('HGET', KEYS[7], name)
if not pause then return {'running'} end
local ok, parsed = pcall(cjson.decode, redis.call('HGET', KEYS[1], name))
if not ok or type(parsed) ~= 'table' or parsed.updated_at ~= ARGV[3] then return {'changed'} end
redis.call('HDEL', KEYS[7], name)
if ARGV[4] == 'none' then
  if ARGV[5] ~= '' then
    local last = tonumber(redis.call('HGET', KEYS[2], name) or '0')
    if tonumber(ARGV[5]) > last then
      redis.call('HSET', KEYS[2], name, ARGV[5])
    end
  end
  redis.call('ZADD', KEYS[3], ARGV[6], name)
else
  redis.call('ZADD', KEYS[3], 0, name)
end
return {'resumed', pause}
