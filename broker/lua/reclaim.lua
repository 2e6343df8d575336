-- reclaim.lua: hand back the tasks of a live-but-silent holder (stalled past its ttl: a
-- SIGSTOP, a GC pause, a partition), found by the liveness scanner.
-- KEYS[1] the group's stream   ARGV[1] base   ARGV[2] retention_ms
-- ARGV[3] the silent consumer   ARGV[4] group   ARGV[5] its ttl ms   ARGV[6] the scanner's pid
-- Returns the number of tasks handed back.
-- Each of the consumer's entries idle for at least its ttl (XCLAIM with that min idle, in this
-- atomic step, so an entry renewed meanwhile is left alone) goes back on the stream as a fresh
-- entry: an acquired task is marked with its silent holder ('dead', reported by the next claim
-- as the previous holder) and is no longer acquired by it, so its every later write is refused
-- (FENCED); a read but never acquired entry simply goes back. A stall is not a death: no
-- ``deaths`` are counted (the holder may be alive; strikes still count at the next claim).
local q, who, group, ttl, me = KEYS[1], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local n = 0
local pend = redis.call('XPENDING', q, CG, 'IDLE', ttl, '-', '+', 100, who)
for _, row in ipairs(pend) do
  local eid = row[1]
  if #redis.call('XCLAIM', q, CG, me, ttl, eid, 'JUSTID') == 1 then
    local found = redis.call('XRANGE', q, eid, eid)
    local fields = found[1] and found[1][2]
    local tid = false
    if fields then
      for j = 1, #fields, 2 do if fields[j] == 't' then tid = fields[j + 1] end end
    end
    local t = tid and redis.call('HMGET', k_task(tid), 'state', 'eid', 'pid') or {}
    drop_entry(group, eid)
    if t[1] and t[2] == eid and (t[1] == 'acquired' or t[1] == 'pending') then
      deliver(tid, group)
      if t[1] == 'acquired' then redis.call('HSET', k_task(tid), 'dead', t[3]) end
      n = n + 1
    end
  end
end
if #redis.call('XPENDING', q, CG, '-', '+', 1, me) == 0 then
  redis.call('XGROUP', 'DELCONSUMER', q, CG, me)
end
return n
