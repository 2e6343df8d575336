-- get.lua: read a promise, settling it first if its deadline has passed (lazy timeout).
-- KEYS[1] promise key   ARGV[1] base   ARGV[2] retention_ms   ARGV[3] id
-- ARGV[4] listener client id ('' = none): when the promise is still pending, the client is
--         added as a listener and will get the settled record in its inbox.
-- Returns the record (lib.lua FIELDS order) then the Redis clock of this read, or nil when
-- the promise does not exist.
local id, cid = ARGV[3], ARGV[4]
local now = now_ms()
local state = lazy_timeout(id, now)
if not state then return nil end
if cid ~= '' and redis.call('HGET', k_promise(id), 'state') == 'pending' then
  redis.call('SADD', k_ls(id), cid)
end
local r = record(id)
table.insert(r, now)
return r
