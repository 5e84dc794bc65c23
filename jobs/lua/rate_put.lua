-- rate_put.lua: set or remove a kind's rate limit (rate.lua's `ps` and `bu`).
--
-- KEYS[1]  the kind's bucket (`QueueKeys::bucket`)
-- ARGV[1]  source: `setting` (a worker's RATE_LIMIT_<KIND>, at start) or `console`
-- ARGV[2]  tokens a second ('': no limit)
-- ARGV[3]  burst ('' with ARGV[2])
-- ARGV[4]  who (a worker id, or the console's operator)
-- ARGV[5]  when, ms
--
-- A setting is the default until the console changes it: a `setting` call changes nothing
-- once the console has set the limit (or removed it). Removing leaves the console's mark, so a
-- worker starting later does not bring its setting back; a setting's removal deletes the bucket
-- (but for a throttle's hold in force). The bucket's tokens are kept, never above the new
-- burst; a throttle in force stays.
--
-- An operator's call (`console`) also ends a provider's hold and the reduced rate after it
-- (`un`, `e0`, `t0`, `dt`): a gateway answering `Retry-After: 86400` must not stop a kind for a
-- day against the operator's word.
--
-- Returns 1 when written, 0 when the console's value stands.

local source = ARGV[1]
if source == 'setting' and redis.call('HGET', KEYS[1], 'src') == 'console' then
  return 0
end
if source == 'console' then
  redis.call('HDEL', KEYS[1], 'un', 'e0', 't0', 'dt')
  redis.call('PERSIST', KEYS[1])
end
if ARGV[2] == '' then
  if source == 'console' then
    redis.call('HDEL', KEYS[1], 'ps', 'bu')
    redis.call('HSET', KEYS[1], 'src', source, 'by', ARGV[4], 'at', ARGV[5])
  else
    -- No limit and no console mark: the bucket goes (the tokens counted under the limit with
    -- it), so fetches are back to one EXISTS; a throttle's hold in force stays, and the bucket
    -- expires with it, as throttle.lua leaves a kind without a limit.
    local held = redis.call('HGET', KEYS[1], 'un')
    redis.call('DEL', KEYS[1])
    if held then
      redis.call('HSET', KEYS[1], 'un', held)
      redis.call('PEXPIREAT', KEYS[1], math.floor(tonumber(held)))
    end
  end
  return 1
end
local burst = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'ps', ARGV[2], 'bu', burst, 'src', source, 'by', ARGV[4], 'at', ARGV[5])
-- A bucket that held only a throttle's hold was set to expire with it; a limit stays.
redis.call('PERSIST', KEYS[1])
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tk'))
if tokens and tokens > burst then
  redis.call('HSET', KEYS[1], 'tk', burst)
end
return 1
