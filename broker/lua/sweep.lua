-- sweep.lua: settle expired promises and purge retained ones, under a fleet-wide lease.
-- KEYS[1] the shard's sweep lease key   ARGV[1] base   ARGV[2] retention_ms
-- ARGV[3] worker pid   ARGV[4] lease ms   ARGV[5] max items per call
-- ARGV[6] worker registry horizon ms (entries older than this are dropped from w:<group>)
-- Returns {holds lease (1|0), timeouts settled, promises purged, next deadline (timeout or
-- delayed task) ms or -1, now}. Between passes the holder blocks on the shard's sweep-wake list
-- (lib.lua wake_if_first pushes to it when a new deadline is the earliest) until the next one.
-- Guarantees: only the lease holder sweeps (others return at once); time is the Redis clock;
-- timers resolve and other promises time out (rejected_timedout), waking their awaiters;
-- delayed tasks due are delivered again; a purged promise leaves no key and no index entry.
local pid, lease_ms, limit, horizon = ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= pid then return {0, 0, 0, -1, 0} end
redis.call('SET', KEYS[1], pid, 'PX', lease_ms)
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', K_TIMEOUTS, '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(due) do
  if not lazy_timeout(id, now) then redis.call('ZREM', K_TIMEOUTS, id) end
  -- a promise settled some other way is no longer in the index; make sure either way
  redis.call('ZREM', K_TIMEOUTS, id)
end
-- Delayed tasks whose time came go back on their group's stream (if still delayed).
for _, tid in ipairs(redis.call('ZRANGEBYSCORE', K_DELAYED, '-inf', now, 'LIMIT', 0, limit)) do
  local t = redis.call('HMGET', k_task(tid), 'state', 'group')
  if t[1] == 'delayed' then deliver(tid, t[2]) end
  redis.call('ZREM', K_DELAYED, tid)
end
local gone = redis.call('ZRANGEBYSCORE', K_GC, '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(gone) do
  local p = redis.call('HMGET', k_promise(id), 'state', 'tags', 'g')
  if p[1] then redis.call('ZREM', k_state(p[1]), id) end
  -- A call: its promise names its group (or, settled before that rule, its task is kept).
  if p[1] and (p[3] or redis.call('EXISTS', k_task(id)) == 1) then
    redis.call('HINCRBY', K_COUNTS, p[1], -1)  -- a call leaves the counts with its purge
  end
  if p[2] and p[2] ~= '' then
    for k, v in pairs(cjson.decode(p[2])) do redis.call('ZREM', k_tag(k, tostring(v)), id) end
  end
  for _, s in ipairs({'resolved', 'rejected', 'rejected_canceled', 'rejected_timedout'}) do
    redis.call('ZREM', k_state(s), id)
  end
  redis.call('DEL', k_promise(id), k_task(id), k_cb(id), k_ls(id), k_children(id))
  redis.call('ZREM', K_GC, id)
end
for _, g in ipairs(redis.call('SMEMBERS', K_GROUPS)) do
  redis.call('ZREMRANGEBYSCORE', B .. ':w:' .. g, '-inf', now - horizon)
end
local next_at = -1
for _, z in ipairs({K_TIMEOUTS, K_DELAYED}) do
  local nxt = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
  if #nxt > 0 and (next_at < 0 or tonumber(nxt[2]) < next_at) then next_at = tonumber(nxt[2]) end
end
return {1, #due, #gone, next_at, now}
