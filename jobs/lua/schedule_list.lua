-- schedule_list.lua: the schedules of some owners, with their last fired ticks, in one
-- consistent read that reads only those owners' entries, not every schedule's. (schedule_index.lua is prepended.)
--
-- KEYS[1..7]  as in schedule_index.lua (definitions, last, next-fire, owners, counts, by-owner,
--             paused)
-- ARGV[1..]   owners ("api:<producer>", "file")
--
-- Returns {{name, definition JSON, last fired tick ms or nil, pause JSON or nil}, ...}, in no
-- order.

ensure_index()
local items = {}
for _, owner in ipairs(ARGV) do
  local prefix = owner .. '\0'
  for _, member in ipairs(redis.call('ZRANGEBYLEX', KEYS[6], '[' .. prefix, '(' .. owner .. '\1')) do
    local name = string.sub(member, #prefix + 1)
    local def = redis.call('HGET', KEYS[1], name)
    if def then
      items[#items + 1] = {name, def, redis.call('HGET', KEYS[2], name), redis.call('HGET', KEYS[7], name)}
    end
  end
end
return items
