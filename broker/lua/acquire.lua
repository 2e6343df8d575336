-- acquire.lua: turn entries a worker just read with XREADGROUP into held tasks.
-- KEYS[1] the group's stream   ARGV[1] base   ARGV[2] retention_ms
-- ARGV[3] worker pid (its consumer name)   ARGV[4] group   ARGV[5] max deliveries
-- ARGV[6..] pairs: entry id, task id ('' when the entry had no task id field)
-- Returns one array per entry: {entry id, 'ok', task id, version, attempts, param, ph,
--   timeout_at} for a task now held at a new version; {entry id, 'skip'} for a stale entry
--   (acked and deleted); {entry id, 'dead', task id} for an entry dead-lettered (garbage, or
--   delivered more than max deliveries times; its promise is rejected).
-- Guarantees: each acquisition bumps the task version (the fencing token) atomically with
-- recording the holder; an entry that does not name a live pending task never reaches user code.
local pid, group, maxd = ARGV[3], ARGV[4], tonumber(ARGV[5])
local now = now_ms()
local out = {}
for i = 6, #ARGV, 2 do
  local eid, tid = ARGV[i], ARGV[i + 1]
  local t = false
  if tid ~= '' then t = redis.call('HMGET', k_task(tid), 'state', 'eid', 'attempts') end
  if not t or not t[1] then
    redis.call('XADD', k_dlq(group), 'MAXLEN', '~', '10000', '*', 't', tid, 'eid', eid,
               'reason', 'entry names no task', 'at', now)
    drop_entry(group, eid)
    table.insert(out, {eid, 'dead', tid})
  elseif t[1] ~= 'pending' or t[2] ~= eid then
    drop_entry(group, eid)
    table.insert(out, {eid, 'skip'})
  else
    local attempts = redis.call('HINCRBY', k_task(tid), 'attempts', 1)
    if attempts > maxd then
      dead_letter(tid, group, eid, 'delivered ' .. (attempts - 1) ..
                  ' times without completing (max deliveries reached)', now)
      table.insert(out, {eid, 'dead', tid})
    else
      local v = redis.call('HINCRBY', k_task(tid), 'v', 1)
      redis.call('HSET', k_task(tid), 'state', 'acquired', 'pid', pid)
      local p = redis.call('HMGET', k_promise(tid), 'param', 'ph', 'timeout_at')
      table.insert(out, {eid, 'ok', tid, tostring(v), attempts, p[1], p[2], p[3]})
    end
  end
end
return out
