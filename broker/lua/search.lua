-- search.lua: list promises by state and/or one tag, oldest first (index order: created_at), without scans.
-- KEYS[1] the index searched (state index, or tag index when a tag is given)
-- ARGV[1] base   ARGV[2] retention_ms   ARGV[3] state filter ('' = any)
-- ARGV[4] offset   ARGV[5] limit
-- Returns {next offset (-1 when done), record, record, ...}.
-- Guarantees: reads only the index and the promises it names (O(log n + limit)); entries whose
-- promise expired are skipped.
local state, offset, limit = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local ids = redis.call('ZRANGE', KEYS[1], offset, offset + limit - 1)
local out = {-1}
if #ids == limit then out[1] = offset + limit end
for _, id in ipairs(ids) do
  local r = record(id)
  if r and (state == '' or r[2] == state) then table.insert(out, r) end
end
return out
