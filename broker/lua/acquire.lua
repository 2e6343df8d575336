-- acquire.lua: turn entries a worker just read with XREADGROUP into held tasks (claim row).
-- KEYS[1] the group's stream   ARGV[1] base   ARGV[2] retention_ms
-- ARGV[3] worker pid (its consumer name)   ARGV[4] group   ARGV[5] max deliveries
-- ARGV[6..] pairs: entry id, task id ('' when the entry had no task id field)
-- Returns one row per entry (see claim() in lib.lua): {entry id, 'ok', task id, version,
--   strikes, param, ph, timeout_at, previous holder} for a task now held at a new version
--   (previous holder: the dead worker whose task requeue.lua handed back, else ''); {entry id,
--   'skip'} for an entry that is not this worker's to claim; {entry id, 'dead', task id} for
--   an entry dead-lettered (garbage, or too many deliveries that ended in nothing).
-- Guarantees: each acquisition bumps the task version (the fencing token) atomically with
-- recording the holder; an entry that does not name a live pending task never reaches user
-- code. A stale reader changes nothing: an entry no longer in this worker's pending list (taken
-- over while the reader stalled between XREADGROUP and this call) is left alone, so the one
-- owner invariant holds (an acquired task has exactly one pending entry, owned by its holder).
local pid, group, maxd = ARGV[3], ARGV[4], tonumber(ARGV[5])
local q = k_stream(group)
local now = now_ms()
local out = {}
for i = 6, #ARGV, 2 do
  local eid, tid = ARGV[i], ARGV[i + 1]
  -- The ownership lookup is what tells a stale read apart: an entry acked since (its task
  -- settled, perhaps purged) or taken over is skipped untouched, never dead-lettered as
  -- "names no task" nor dropped from under its holder.
  local own = redis.call('XPENDING', q, CG, eid, eid, 1)
  if not own[1] or own[1][2] ~= pid then
    table.insert(out, {eid, 'skip'})
  else
    local t = false
    if tid ~= '' then t = redis.call('HMGET', k_task(tid), 'state', 'eid') end
    if not t or not t[1] then
      table.insert(out, dead_entry(group, eid, tid, now))
    elseif t[2] ~= eid then
      drop_entry(group, eid)  -- ours, and no task points at it: a stale entry
      table.insert(out, {eid, 'skip'})
    elseif t[1] ~= 'pending' then
      -- The task holds this very entry already (this worker's own takeover pass claimed it
      -- while the read was stalled): leave both alone.
      table.insert(out, {eid, 'skip'})
    else
      -- A task requeued after its holder died names that holder (claim() reports it).
      table.insert(out, claim(tid, eid, pid, group, now, maxd, nil))
    end
  end
end
return out
