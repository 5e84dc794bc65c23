-- rate.lua: a kind's token bucket, shared by every worker on any host. Prepended (after
-- record.lua, for clock_ms) to fetch.lua and throttle.lua; it defines functions only.
--
-- The bucket is one HASH under the kind's hash tag (`QueueKeys::bucket`):
--   ps      the limit in force, tokens a second (absent: no limit)
--   bu      burst: the most tokens the bucket holds
--   tk, ts  tokens left (a float) when last counted, and when (ms, Redis's clock)
--   un      a provider's throttle: no token before this time (ms)
--   e0, t0  after a throttle: the reduced rate, and when its climb back to `ps` starts (ms)
--   dt      when the rate was last reduced (ms): one reduction per second at most
--   src, by, at  who set the limit (`setting` or `console`) and when: read by the console
-- Without the hash (no limit, no throttle) a fetch costs one EXISTS and writes nothing.

local RATE_FIELDS = {'ps', 'bu', 'tk', 'ts', 'un', 'e0', 't0'}

-- The rate in force at `now`: the limit, or after a throttle the reduced rate climbing back
-- by the whole limit every `ramp_ms` (additive increase), never above the limit.
local function rate_effective(b, now, ramp_ms)
  if not b.e0 or not b.t0 then
    return b.ps
  end
  return math.min(b.e0 + b.ps * math.max(now - b.t0, 0) / ramp_ms, b.ps)
end

-- Reads the bucket at `key` and counts its tokens at `now`. The answer's `grant` is the most
-- jobs it allows now (nil: no limit), and when that is 0, `wait` is the ms until a token is due.
local function rate_read(key, now, ramp_ms)
  local b = {key = key, now = now}
  -- No bucket (no limit, no throttle): one EXISTS, cheaper than an HMGET answering nils.
  if redis.call('EXISTS', key) == 0 then
    return b
  end
  local values = redis.call('HMGET', key, unpack(RATE_FIELDS))
  for i, field in ipairs(RATE_FIELDS) do
    b[field] = tonumber(values[i])
  end
  if b.un and b.un > now then
    b.grant, b.wait = 0, b.un - now
    return b
  end
  if not b.ps or b.ps <= 0 then
    return b
  end
  b.rate = rate_effective(b, now, ramp_ms)
  local burst = b.bu or b.ps
  if b.tk and b.ts then
    -- No token accrues while a throttle holds (`un`).
    local from = math.max(b.ts, b.un or 0)
    b.tokens = math.min(burst, b.tk + b.rate * math.max(now - from, 0) / 1000)
  else
    b.tokens = burst
  end
  b.grant = math.floor(b.tokens)
  if b.grant < 1 then
    b.wait = math.max(math.ceil((1 - b.tokens) * 1000 / b.rate), 1)
  end
  return b
end

-- The most of `want` jobs the bucket allows now.
local function rate_grant(b, want)
  if b.grant == nil then
    return want
  end
  return math.min(want, b.grant)
end

-- Takes `used` tokens: the ones granted and not used stay in the bucket. Writes nothing for a
-- bucket without a limit, or when no token was used.
local function rate_take(b, used)
  if b.tokens and used > 0 then
    redis.call('HSET', b.key, 'tk', b.tokens - used, 'ts', b.now)
  end
end

-- Gives `n` tokens back to the bucket at `key`: jobs leased with a token that sent nothing (a
-- webhook its destination deferred, or whose cancellation it found) did not use it.
-- Never above the burst; nothing for a bucket without a limit. `tk` counts from `ts`, so the
-- tokens accrued since stay counted.
local function rate_give(key, n)
  if n <= 0 then
    return
  end
  local values = redis.call('HMGET', key, 'ps', 'bu', 'tk')
  local ps, burst, tokens = tonumber(values[1]), tonumber(values[2]), tonumber(values[3])
  if not ps or ps <= 0 or not tokens then
    return
  end
  redis.call('HSET', key, 'tk', math.min(tokens + n, burst or ps))
end
