-- record.lua: prepended to every script that reads or writes job records.
--
-- A job record is a STRING holding a MessagePack map with short keys (`record::JobRecord` in
-- Rust is the reference): st status, at attempts started, ln leases handed out (the lease
-- token: it never repeats), ma max attempts, pr producer,
-- ca created at, ra run at, pl payload, ik idempotency key, tp traceparent, sa started at,
-- wk worker, le last error, pm provider message id, fa finished at, rs dead reason, da dead at,
-- fp / fx the fingerprint and expiry of the idempotency record a dead job gave up, nt notes,
-- hs attempt history ({n, sa, fa, er, wk}), pi priority ("h", "l"; absent: normal), gr group
-- (absent: none); lanes.lua reads the last two. df first deferral of a webhook waiting for its
-- destination (destination_acquire.lua). dv the provider's delivery report ({s status, a at,
-- d detail}; delivery.lua), kept on the compact records of finished jobs. Times are ms since
-- the epoch.

-- Redis's own clock, ms: workers whose clocks disagree never take each other's live jobs.
local function clock_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

-- The record at `key`, decoded; nil when there is none or it cannot be read (a foreign writer,
-- a key of another type): a script must never fail half-way for one bad record, since Redis
-- keeps the writes it made before the error.
local function load_record(key)
  local ok, raw = pcall(redis.call, 'GET', key)
  if not ok or not raw then
    return nil
  end
  local decoded, record = pcall(cmsgpack.unpack, raw)
  if not decoded or type(record) ~= 'table' or type(record.st) ~= 'string' then
    return nil
  end
  return record
end

local function save_record(key, record)
  redis.call('SET', key, cmsgpack.pack(record))
end

local function is_dead_letter(record)
  return record.st == 'dead' or record.st == 'expired'
end

-- Terminal: a finished job never runs again (fetch skips its id where it still lies).
local function is_finished(record)
  return record.st == 'succeeded' or record.st == 'cancelled' or is_dead_letter(record)
end

-- Appends the attempt that just ended to the record's history.
local function add_attempt(record, finished_at, err)
  local history = record.hs or {}
  history[#history + 1] = {n = record.at, sa = record.sa or finished_at, fa = finished_at, er = err, wk = record.wk or ''}
  record.hs = history
end

-- bury(record, dead_key, id, reason, now, idem_prefix): marks the record dead (expired, for
-- reason "expired") with its reason, indexes it in the queue's dead set by time and in its
-- producer's dead set ("<dead_key>:by:<producer>", for the per-producer cap), and deletes its
-- idempotency record so that the producer's key can enqueue anew (a dead letter never blocks
-- a new job); the record's fingerprint and expiry stay on the job (fp, fx) so that replay.lua
-- can claim the key again for it. The keys of schedule ticks (`schedule:<name>:<tick>`) are
-- kept until they expire: another worker computing the same tick must find it taken, or a
-- tick whose job died at once would fire again. The caller saves the record.
local function bury(record, dead_key, id, reason, now, idem_prefix)
  record.st = reason == 'expired' and 'expired' or 'dead'
  record.rs = reason
  record.da = now
  record.fa = now
  redis.call('ZADD', dead_key, now, id)
  redis.call('ZADD', dead_key .. ':by:' .. (record.pr or ''), now, id)
  local key = record.ik
  if record.pr and key and key ~= '' and string.sub(key, 1, 9) ~= 'schedule:' then
    -- Only while the idempotency record still names this job: past its 24 h the key may
    -- belong to a newer one.
    local idem_key = idem_prefix .. ':' .. record.pr .. ':' .. key
    local held = redis.call('GET', idem_key)
    if held and string.sub(held, -(#id + 1)) == ' ' .. id then
      local ttl = redis.call('PTTL', idem_key)
      if ttl > 0 then
        record.fp = string.sub(held, 1, #held - #id - 1)
        record.fx = now + ttl
      end
      redis.call('DEL', idem_key)
    end
  end
end

-- A key of the queue whose record keys start with `job_prefix` ("<queue>:job"): "<queue>:<name>",
-- for scripts that were given only the record prefix (`QueueKeys` builds the same names).
local function queue_key(job_prefix, name)
  return string.sub(job_prefix, 1, #job_prefix - 4) .. ':' .. name
end

-- The shortest time a cancelled record is kept (ms), whatever the kind's retention: a
-- cancelled id may still lie in the ready list, and a second cancel must find the same answer.
local CANCELLED_MIN_KEEP = 3600000

-- cancel_record(key, record, now, idem_prefix): ends the job as `cancelled`, compacted like a
-- succeeded one (no payload, no trace) but keeping its idempotency key and attempt history,
-- kept for max(the retention the cancel carried (record.cr, ms), what is left of its
-- idempotency record, CANCELLED_MIN_KEEP). The idempotency record is kept: a producer
-- resending the key is answered with this cancelled job until the key expires. The caller
-- indexes the id in the queue's `cancelled` stream (one XADD per call: index_cancelled).
local function cancel_record(key, record, now, idem_prefix)
  local kept = {st = 'cancelled', at = record.at, ln = record.ln, ma = record.ma, pr = record.pr, ca = record.ca,
    ra = record.ra, sa = record.sa, wk = record.wk, fa = now, le = record.le, pm = record.pm, ik = record.ik,
    cx = record.cx or now, cr = record.cr, nt = record.nt, hs = record.hs, pi = record.pi, gr = record.gr, dv = record.dv}
  local ttl = math.max(record.cr or 0, CANCELLED_MIN_KEEP)
  if record.ik and record.pr then
    ttl = math.max(ttl, redis.call('PTTL', idem_prefix .. ':' .. record.pr .. ':' .. record.ik))
  end
  redis.call('SET', key, cmsgpack.pack(kept), 'PX', ttl)
end

-- index_finished(stream, ids, now, keep): one XADD indexing `ids` (fields: the ids, values
-- empty), then the entries older than `keep` ms trimmed (approximately, MINID ~), and the
-- stream set to expire `keep` ms after this last addition, so an idle queue leaves no index.
local function index_finished(stream, ids, now, keep)
  if #ids == 0 then
    return
  end
  local args = {}
  for _, id in ipairs(ids) do
    args[#args + 1] = id
    args[#args + 1] = ''
  end
  redis.call('XADD', stream, '*', unpack(args))
  redis.call('XTRIM', stream, 'MINID', '~', math.max(now - keep, 0))
  -- Once nothing was added for `keep`, every entry is past it: the whole index goes.
  if keep > 0 then
    redis.call('PEXPIRE', stream, keep)
  end
end
