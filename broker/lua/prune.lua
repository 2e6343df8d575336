-- prune.lua: delete consumers of a group's stream that hold nothing.
-- KEYS[1] the group's stream   ARGV[1] base   ARGV[2] retention_ms
-- ARGV[3..] consumer names (a worker's own name at a clean stop, or consumers seen gone)
-- Returns the number of consumers deleted.
-- Guarantees: a consumer is deleted only when its pending list is empty at that instant (in
-- this atomic step), so no delivered entry ever leaves the group's pending lists (which would
-- orphan its task). Deleting a live one is harmless: its next XREADGROUP creates it again.
local q = KEYS[1]
local deleted = 0
for i = 3, #ARGV do
  local ok, pend = pcall(redis.call, 'XPENDING', q, CG, '-', '+', 1, ARGV[i])
  if ok and #pend == 0 then
    redis.call('XGROUP', 'DELCONSUMER', q, CG, ARGV[i])
    deleted = deleted + 1
  end
end
return deleted
