-- suspend.lua: the holder parks a task until one of the promises it awaits settles.
-- KEYS[1] task key   ARGV[1] base   ARGV[2] retention_ms
-- ARGV[3] task id   ARGV[4] version   ARGV[5] pid   ARGV[6..] awaited promise ids
-- Returns 'suspended', or 'ready' when an awaited promise is already settled (the task stays
-- held and the caller continues at once), or 'missing' plus an id that does not exist.
-- Guarantees: fenced like every worker mutation; the suspended task holds no stream entry and
-- no worker slot; the callback registered here re-delivers it when an awaited promise settles;
-- a suspension never counts toward dead-lettering (strikes reset to 0).
local tid, v, pid = ARGV[3], ARGV[4], ARGV[5]
if not holds(tid, v, pid) then return fenced_error(tid, v, pid) end
local now = now_ms()
for i = 6, #ARGV do
  local s = lazy_timeout(ARGV[i], now)
  if not s then return {'missing', ARGV[i]} end
  if redis.call('HGET', k_promise(ARGV[i]), 'state') ~= 'pending' then return {'ready'} end
end
for i = 6, #ARGV do redis.call('SADD', k_cb(ARGV[i]), tid) end
local t = redis.call('HMGET', k_task(tid), 'group', 'eid')
drop_entry(t[1], t[2])
-- A suspension is a clean end of this delivery: the strike count starts again.
redis.call('HSET', k_task(tid), 'state', 'suspended', 'eid', '', 'pid', '', 'strikes', 0,
           'deaths', 0)
redis.call('HDEL', k_task(tid), 'suspect')  -- it made progress: no longer a suspect
return {'suspended'}
