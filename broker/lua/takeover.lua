-- takeover.lua: a live worker takes over tasks whose holder went silent past the ttl.
-- KEYS[1] the group's stream   ARGV[1] base   ARGV[2] retention_ms
-- ARGV[3] worker pid   ARGV[4] group   ARGV[5] min idle ms (the ttl)   ARGV[6] cursor
-- ARGV[7] count (the worker's free slots)   ARGV[8] max deliveries
-- ARGV[9..] optional: names of consumers known dead (their connection is gone); their entries
--           are taken at once, whatever their idle time.
-- Returns {next cursor, row...}, each row as claim() in lib.lua makes it: {entry id, 'ok',
--   task id, version, strikes, param, ph, timeout_at, previous holder} | {entry id, 'skip'} |
--   {entry id, 'dead', task id}.
-- A silent holder may be alive (stalled, partitioned): no holder death is counted here; the
-- poison guard counts deaths where a death is certain (requeue.lua: no connection left).
-- Claims use JUSTID (delivery counts live in the task hash: strikes), then read each entry.
-- Guarantees: XAUTOCLAIM and the version bump happen in this one atomic step, so from the
-- moment a task is taken over every call of its old holder is refused (FENCED). Entries deleted
-- from the stream are dropped from the pending list; stale entries are acked and deleted.
local pid, group, min_idle, cursor = ARGV[3], ARGV[4], ARGV[5], ARGV[6]

local count, maxd = tonumber(ARGV[7]), tonumber(ARGV[8])

local q = k_stream(group)
local now = now_ms()
local claimed = {}
-- Who held each entry before this pass claimed it: for a first delivery its holder was
-- running unacquired (the fast path, lib.lua held()), and the task hash does not name it.
local owner = {}
for i = 9, #ARGV do
  if count - #claimed <= 0 then break end
  local dead = ARGV[i]
  if dead ~= pid then
    local pend = redis.call('XPENDING', q, CG, '-', '+', count - #claimed, dead)
    for _, p in ipairs(pend) do
      local got = redis.call('XCLAIM', q, CG, pid, 0, p[1], 'JUSTID')
      for _, id in ipairs(got) do table.insert(claimed, id); owner[id] = dead end
    end
  end
end
-- The silent entries XAUTOCLAIM is about to take, with their holders: one look from the same
-- cursor, as far as its scans can reach (10 entries a slot a scan, MAX_SCANS scans).
local MAX_SCANS = 16
local from = cursor == '0-0' and '-' or cursor
for _, p in ipairs(redis.call('XPENDING', q, CG, 'IDLE', min_idle, from, '+',
                              count * 10 * MAX_SCANS)) do
  owner[p[1]] = owner[p[1]] or p[2]
end
-- XAUTOCLAIM scans at most 10 x COUNT pending entries per call; with COUNT 1 (one free slot, the
-- usual case under load) a silent holder's entries behind a long pending list of live ones
-- would take one pass per 10 entries to reach. So scan on, in this same atomic step, until the
-- free slots are filled, the cursor wraps, or MAX_SCANS calls were made.
local next_cursor = cursor
local scans = 0
while count - #claimed > 0 and scans < MAX_SCANS do
  local r = redis.call('XAUTOCLAIM', q, CG, pid, min_idle, next_cursor, 'COUNT',
                      count - #claimed, 'JUSTID')
  next_cursor = r[1]
  for _, id in ipairs(r[2]) do table.insert(claimed, id) end
  scans = scans + 1
  if next_cursor == '0-0' then break end
end
local out = {next_cursor}
for _, eid in ipairs(claimed) do
  -- JUSTID (then XRANGE) because Redis 6.2 returns entries deleted from the stream as nil.
  local found = redis.call('XRANGE', q, eid, eid)
  local fields = found[1] and found[1][2]
  local tid, fast = entry_of(fields)
  if not fields then
    redis.call('XACK', q, CG, eid)
  else
    local t = false
    if tid then t = redis.call('HMGET', k_task(tid), 'state', 'eid', 'pid', 'v') end
    if not t or not t[1] then
      table.insert(out, dead_entry(group, eid, tid or '', now))
    elseif t[2] ~= eid or (t[1] ~= 'acquired' and t[1] ~= 'pending') then
      drop_entry(group, eid)
      table.insert(out, {eid, 'skip'})
    else
      if fast and t[1] == 'pending' and t[4] == '0' then
        -- A first delivery its silent holder ran unacquired (lib.lua held()): acquired in
        -- that holder's name first, so that this claim counts it as the lapse it was.
        t[3] = owner[eid] or ''
        acquire_first(tid, t[3])
      end
      table.insert(out, claim(tid, eid, pid, group, now, maxd, t[3]))
    end
  end
end
return out
