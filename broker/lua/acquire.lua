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
-- recording the holder; an entry that does not name a live pending task is never handed out
-- here (an entry that carries its call may have been run by its reader already, unacquired:
-- the fast path, lib.lua held(); every write of that run is fenced the same way). A stale reader changes nothing: an entry no longer in this worker's pending list (taken
-- over while the reader stalled between XREADGROUP and this call) is left alone, so the one
-- owner invariant holds (an acquired task has exactly one pending entry, owned by its holder).
local pid, group, maxd = ARGV[3], ARGV[4], tonumber(ARGV[5])
local now = now_ms()
local out = {}
for i = 6, #ARGV, 2 do
  table.insert(out, acquire_entry(ARGV[i], ARGV[i + 1], pid, group, now, maxd, true))
end
return out
