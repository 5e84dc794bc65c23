-- schedule_run.lua: the idempotency key a run-now of one schedule enqueues with. The first
-- run opens a window of ARGV[2] ms holding its key; every run within that window is given the
-- same key, so it makes no second job: a double click across the turn of a second is one run.
-- A run after the window opens the next one, with a key of its own second (a window lasts a
-- second, so two windows never share a second).
--
-- KEYS[1]  the schedule's run-now window (`<ns>:{schedules}:run:<name>`), a STRING: the key
-- ARGV[1]  the key of a run opening a window now (`schedule:<name>:manual:<unix seconds>`)
-- ARGV[2]  the window, ms
--
-- Returns the key to enqueue with.

local held = redis.call('GET', KEYS[1])
if held then
  return held
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
return ARGV[1]
