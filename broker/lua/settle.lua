-- settle.lua: resolve / reject / cancel a promise, once.
-- KEYS[1] promise key   ARGV[1] base   ARGV[2] retention_ms
-- ARGV[3] id   ARGV[4] state (resolved|rejected|rejected_canceled)   ARGV[5] value   ARGV[6] vh
-- ARGV[7] fence task id ('' = unfenced)   ARGV[8] fence version   ARGV[9] fence pid
-- Returns {changed (1|0), record...} or nil when the promise does not exist.
-- Guarantees: of two racing settles exactly one changes the promise; the other gets the
-- stored record back unchanged (changed = 0). A fenced settle by a stale holder fails with
-- FENCED and changes nothing.
local id, state, value, vh = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local ftid, fv, fpid = ARGV[7], ARGV[8], ARGV[9]
if ftid ~= '' and not holds(ftid, fv, fpid) then return fenced_error(ftid, fv, fpid) end
local now = now_ms()
-- Deadline first: a settle of an expired promise finds it timed out and changes nothing.
local before = lazy_timeout(id, now)
if not before then return nil end
local changed = 0
if before == 'pending' then
  settle(id, state, value, vh, now)
  changed = 1
end
local r = record(id)
table.insert(r, 1, changed)
return r
