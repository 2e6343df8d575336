-- heartbeat.lua: a worker renews the tasks it still holds and reports itself alive.
-- KEYS[1] the group's stream   ARGV[1] base   ARGV[2] retention_ms
-- ARGV[3] worker pid   ARGV[4] group   ARGV[5] worker info TTL in ms
-- ARGV[6] the liveness scanner's lease ms ('' = do not try for it: not shard 0)
-- ARGV[7..] pairs: task id, version (or '~' .. entry id: a fast delivery, lib.lua held())
-- Returns {1 if this worker now holds the scanner's lease, 2 if its standby lease (taken when
-- free and the scanner's is held by another), else 0, 1 if the scanner saw work
-- of this group silent past its holder's ttl (the key silent:<group>: a worker with free
-- slots then runs a takeover pass) else 0, task ids this worker no longer holds (taken
-- over, settled or canceled)...}. Trying for the lease here costs the
-- fleet no extra call: a worker that finds it free (its holder died) becomes the scanner.
-- Guarantees: only entries the worker owns at the current version are renewed (XCLAIM JUSTID
-- resets their idle time without counting a delivery); nothing held by another worker is
-- ever touched, because ownership is checked here and not left to XCLAIM. The one write besides
-- the renewals: a fast delivery this worker runs unacquired is acquired (lib.lua held()).
-- Sent without lib.lua (every worker runs it every ttl/5: the prelude would cost more than the
-- work); the few key shapes it needs are spelled out here, as lib.lua spells them.
local B, CG = ARGV[1], 'lb'
local pid, group, info_ttl = ARGV[3], ARGV[4], tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', B .. ':w:' .. group, now, pid)
redis.call('PEXPIRE', B .. ':wi:' .. pid, info_ttl)
-- The group's counters (fulfill.lua's done:<worker>, takeovers) live as long as its workers
-- do, plus the retention: renewed here, not on every completion.
redis.call('PEXPIRE', B .. ':stats:' .. group, ARGV[2])
local lease = 0
if ARGV[6] ~= '' then
  local key = B .. ':scan'
  local holder = redis.call('GET', key)
  if not holder or holder == pid then
    redis.call('SET', key, pid, 'PX', ARGV[6])
    lease = 1
  else
    local sb = redis.call('GET', B .. ':scan-standby')
    if not sb or sb == pid then
      redis.call('SET', B .. ':scan-standby', pid, 'PX', ARGV[6])
      lease = 2
    end
  end
end
local lost = {lease, redis.call('EXISTS', B .. ':silent:' .. group)}
for i = 7, #ARGV, 2 do
  local tid, v = ARGV[i], ARGV[i + 1]
  local tk = B .. ':t:' .. tid
  local h = redis.call('HMGET', tk, 'state', 'v', 'pid', 'eid')
  local ok = h[1] == 'acquired' and h[2] == v and h[3] == pid
  if not ok and string.byte(v, 1) == 126 and h[4] == string.sub(v, 2) then
    -- A fast delivery ('~' .. entry id): lib.lua held(), spelled out. Acquired by this beat
    -- if still unacquired on that entry and the entry is this worker's.
    if h[1] == 'acquired' then
      ok = h[2] == '1' and h[3] == pid
    elseif h[1] == 'pending' and h[2] == '0' then
      local own = redis.call('XPENDING', B .. ':q:' .. group, CG, h[4], h[4], 1)
      if own[1] and own[1][2] == pid then
        redis.call('HSET', tk, 'state', 'acquired', 'v', 1, 'pid', pid, 'strikes', 1)
        ok = true
      end
    end
  end
  if ok then
    redis.call('XCLAIM', B .. ':q:' .. group, CG, pid, 0, h[4], 'JUSTID')
  else
    table.insert(lost, tid)
  end
end
return lost
