-- create_many.lua: create a batch of promises with tasks on one group, idempotently.
-- KEYS[1]  the group's stream (routing only; every id must belong to this shard)
-- ARGV[1]  base   ARGV[2] retention_ms   ARGV[3] group   ARGV[4] timeout in ms from now
-- ARGV[5]  retention of these calls in ms once settled ('' = the caller's default, ARGV[2])
-- ARGV[6..] pairs: id, param
-- Returns one {created (1|0), state, value, value headers} per pair, in order.
-- Guarantees: each pair behaves exactly like create.lua for that id (an existing id is
-- returned unchanged and gets no second task); the whole batch is one atomic step.
local group, timeout, ret = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_ms()
local out = {}
for i = 6, #ARGV, 2 do
  local id = ARGV[i]
  local state = lazy_timeout(id, now)
  if state then
    local p = redis.call('HMGET', k_promise(id), 'state', 'value', 'vh')
    table.insert(out, {0, p[1], p[2], p[3]})
  else
    new_promise(id, ARGV[i + 1], '', '', timeout, group, '0', now, nil, ret)
    table.insert(out, {1, 'pending', '', ''})
  end
end
return out
