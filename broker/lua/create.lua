-- create.lua: create a promise (optionally with a task delivered to a group), idempotently.
-- KEYS[1]  promise key (routing only; the script derives every key from ARGV[1])
-- ARGV[1]  base   ARGV[2] retention_ms
-- ARGV[3]  id     ARGV[4] param (bytes)   ARGV[5] param headers (bytes, may be '')
-- ARGV[6]  tags as a JSON object ('' for none)   ARGV[7] timeout in ms from now (Redis clock)
-- ARGV[8]  group ('' = no task)   ARGV[9] listener client id ('' = none)
-- ARGV[10] fence task id ('' = unfenced)   ARGV[11] fence version   ARGV[12] fence pid
-- ARGV[13] '1' when the promise is a timer (resolves at its deadline instead of timing out)
-- ARGV[14] deadline cap, absolute ms on the Redis clock ('' = none): a step's deadline never
--          exceeds its parent's
-- ARGV[15] retention of this call in ms once settled ('' = the caller's default, ARGV[2]);
--          its steps are retained as long as it is
-- Returns {created (1|0), record..., now}; record in lib.lua FIELDS order, now = the Redis
-- clock of this call (so that callers compute remaining times without a clock of their own).
-- Guarantees: an existing id is returned unchanged (after a lazy timeout check) and nothing
-- else happens (no second task); a fenced create by a stale holder fails with FENCED and
-- changes nothing.
local id, param, ph, tags, timeout = ARGV[3], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
local group, cid, ftid, fv, fpid, timer = ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13]
local cap = tonumber(ARGV[14])
local ret = tonumber(ARGV[15])
if ftid ~= '' and not holds(ftid, fv, fpid) then return fenced_error(ftid, fv, fpid) end
local now = now_ms()
local state = lazy_timeout(id, now)
if state then
  if cid ~= '' and redis.call('HGET', k_promise(id), 'state') == 'pending' then
    redis.call('SADD', k_ls(id), cid)
  end
  local r = record(id)
  table.insert(r, 1, 0)
  table.insert(r, now)
  return r
end
local r = new_promise(id, param, ph, tags, timeout, group, timer, now, cap, ret)
if cid ~= '' then redis.call('SADD', k_ls(id), cid) end
table.insert(r, 1, 1)
table.insert(r, now)
return r
