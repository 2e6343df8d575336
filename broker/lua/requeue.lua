-- requeue.lua: hand the work of a consumer whose Redis connections are all gone (its worker
-- died: kill -9, OOM killer, crash, lost node) back to its group, at once.
-- KEYS[1] the group's stream   ARGV[1] base   ARGV[2] retention_ms
-- ARGV[3] the dead consumer   ARGV[4] group   ARGV[5] max deaths   ARGV[6] ttl ms
-- ARGV[7] max deliveries
-- Returns {requeued, {quarantined task id...}, delayed}.
-- The poison guard counts a death only where it is certain whom to blame: when the dead
-- worker was running that call alone (a first delivery it had read counts as running: it
-- starts as soon as it is read; a read whose reply never reached the worker is the one case
-- where that blames a call that did not run). Then (in this one atomic step) the task's ``deaths``
-- goes up: at max deaths it is quarantined (dead-lettered, rejected Quarantined); from the
-- second death on it waits in 'delayed' (ttl x 2^(deaths-2), at most 60 s); otherwise it goes
-- back on the stream marked with its dead holder (field 'dead', reported by the next claim).
-- When the dead worker ran several calls, none is blamed: each goes back marked 'suspect',
-- and the worker that claims a suspect runs it alone (nothing else beside it), so that a
-- death during that run is attributable. A call's first entry, which the worker runs as soon
-- as it reads it (the fast path, lib.lua held()), counts as held from the read on. Other
-- entries read but not acquired go back as they were;
-- entries no task points at are dropped. Every way out leaves the task not 'acquired' by the
-- dead consumer, so from this instant its every write is refused (FENCED). The consumer is
-- then deleted if it holds nothing. Any worker with a free slot reads the fresh entries at
-- once (blocking XREADGROUP): the work spreads, it is not handed to the scanner.
local q, dead, group = KEYS[1], ARGV[3], ARGV[4]
local max_deaths, ttl, maxd = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local now = now_ms()
local requeued, delayed, quarantined = 0, 0, {}
local pend = redis.call('XPENDING', q, CG, '-', '+', 1000, dead)
local rows, held = {}, 0
for _, row in ipairs(pend) do
  local eid = row[1]
  local found = redis.call('XRANGE', q, eid, eid)
  local fields = found[1] and found[1][2]
  local tid, fast = entry_of(fields)
  local t = tid and redis.call('HMGET', k_task(tid), 'state', 'eid', 'strikes', 'v') or {}
  if fast and t[1] == 'pending' and t[2] == eid and t[4] == '0' then
    -- A first delivery the dead worker was running straight from its entry (the fast path,
    -- lib.lua held()) before any write of its own acquired it: acquired now, in its name,
    -- as its first write would have, so that it is blamed and counted like any held call.
    acquire_first(tid, dead)
    t = {'acquired', eid, '1', '1'}
  end
  if t[1] == 'acquired' and t[2] == eid then held = held + 1 end
  table.insert(rows, {eid, tid, t})
end
for _, row in ipairs(rows) do
  local eid, tid, t = row[1], row[2], row[3]
  if not t[1] or t[2] ~= eid or (t[1] ~= 'acquired' and t[1] ~= 'pending') then
    drop_entry(group, eid)
  elseif t[1] == 'pending' then
    drop_entry(group, eid)
    deliver(tid, group)
    requeued = requeued + 1
  else
    local tk = k_task(tid)
    local deaths = 0
    if held == 1 then deaths = redis.call('HINCRBY', tk, 'deaths', 1) end
    if held == 1 and deaths >= max_deaths then
      dead_letter(tid, group, eid, 'quarantined: its worker died ' .. deaths .. ' times in a ' ..
                  'row while running it alone (the call kills its workers: os._exit, a ' ..
                  'crash in native code, the OOM killer)', now, 'Quarantined')
      table.insert(quarantined, tid)
    elseif deaths >= 2 and (tonumber(t[3]) or 0) + 1 <= maxd then
      drop_entry(group, eid)
      redis.call('HSET', tk, 'state', 'delayed', 'eid', '', 'pid', '', 'dead', dead)
      redis.call('ZADD', K_DELAYED, now + math.min(60000, ttl * 2 ^ (deaths - 2)), tid)
      wake_if_first(K_DELAYED, tid, math.min(60000, ttl * 2 ^ (deaths - 2)))
      delayed = delayed + 1
    else
      drop_entry(group, eid)
      deliver(tid, group)
      redis.call('HSET', tk, 'dead', dead)
      if held > 1 then redis.call('HSET', tk, 'suspect', 1) end
      requeued = requeued + 1
    end
  end
end
if #redis.call('XPENDING', q, CG, '-', '+', 1, dead) == 0 then
  redis.call('XGROUP', 'DELCONSUMER', q, CG, dead)
end
return {requeued, quarantined, delayed}
