-- schedule_list.lua: the schedules of some owners, with their last fired ticks, in one
-- consistent read. (schedule_index.lua is prepended.)
--
-- KEYS[1..5]  as in schedule_index.lua (definitions, last, next-fire, owners, counts)
-- ARGV[1..]   owners ("api:<producer>", "file")
--
-- Returns {{name, definition JSON, last fired tick ms or nil}, ...}, in no order.

ensure_index()
local wanted = {}
for _, owner in ipairs(ARGV) do wanted[owner] = true end
local items = {}
local flat = redis.call('HGETALL', KEYS[4])
for i = 1, #flat, 2 do
  if wanted[flat[i + 1]] then
    local def = redis.call('HGET', KEYS[1], flat[i])
    if def then
      items[#items + 1] = {flat[i], def, redis.call('HGET', KEYS[2], flat[i])}
    end
  end
end
return items
