-- lease.lua: the liveness scanner's lease and its standby's (one scanner per Redis).
-- KEYS[1] the scanner's lease   KEYS[2] the standby lease   ARGV[1] base   ARGV[2] retention
-- ARGV[3] pid   ARGV[4] lease ms
-- Returns {role, holder}: role 1 when ``pid`` holds the scanner's lease for ARGV[4] ms from
-- now, 2 when it holds the standby lease (another holds the scanner's), 0 when others hold
-- both; holder is the scanner's lease holder before this call ('' when it was free).
-- Guarantees: at most one holder of each lease at a time (by the Redis clock); a holder that
-- stops renewing loses it after ARGV[4] ms; the standby, renewing every scan period, takes
-- the scanner's lease within one period of its lapse (and gives up the standby lease).
-- Sent without lib.lua (run every scan period by two workers).
local pid, ms = ARGV[3], ARGV[4]
local holder = redis.call('GET', KEYS[1])
if not holder or holder == pid then
  redis.call('SET', KEYS[1], pid, 'PX', ms)
  if redis.call('GET', KEYS[2]) == pid then redis.call('DEL', KEYS[2]) end
  return {1, holder or ''}
end
local standby = redis.call('GET', KEYS[2])
if not standby or standby == pid then
  redis.call('SET', KEYS[2], pid, 'PX', ms)
  return {2, holder}
end
return {0, holder}
