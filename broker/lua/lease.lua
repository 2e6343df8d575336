-- lease.lua: take or renew a fleet-wide lease (the liveness scanner's).
-- KEYS[1] the lease key   ARGV[1] base   ARGV[2] retention_ms   ARGV[3] pid   ARGV[4] lease ms
-- Returns 1 when ``pid`` holds the lease for ARGV[4] ms from now, 0 when another holds it.
-- Guarantees: at most one holder at a time (by the Redis clock); a holder that stops renewing
-- loses it after ARGV[4] ms.
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
return 1
