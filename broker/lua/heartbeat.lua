-- heartbeat.lua: a worker renews the tasks it still holds and reports itself alive.
-- KEYS[1] the group's stream   ARGV[1] base   ARGV[2] retention_ms
-- ARGV[3] worker pid   ARGV[4] group   ARGV[5] worker info TTL in ms
-- ARGV[6..] pairs: task id, version
-- Returns the task ids this worker no longer holds (taken over, settled or canceled).
-- Guarantees: only entries the worker owns at the current version are renewed (XCLAIM JUSTID
-- resets their idle time without counting a delivery); nothing held by another worker is
-- ever touched, because ownership is checked here and not left to XCLAIM.
-- Sent without lib.lua (every worker runs it every ttl/5: the prelude would cost more than the
-- work); the few key shapes it needs are spelled out here, as lib.lua spells them.
local B, CG = ARGV[1], 'lb'
local pid, group, info_ttl = ARGV[3], ARGV[4], tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', B .. ':w:' .. group, now, pid)
redis.call('PEXPIRE', B .. ':wi:' .. pid, info_ttl)
local lost = {}
for i = 6, #ARGV, 2 do
  local tid, v = ARGV[i], ARGV[i + 1]
  local tk = B .. ':t:' .. tid
  local h = redis.call('HMGET', tk, 'state', 'v', 'pid', 'eid')
  if h[1] == 'acquired' and h[2] == v and h[3] == pid then
    redis.call('XCLAIM', B .. ':q:' .. group, CG, pid, 0, h[4], 'JUSTID')
  else
    table.insert(lost, tid)
  end
end
return lost
