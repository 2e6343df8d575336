-- release.lua: the holder hands a task back to its group (shutdown, or a failed delivery).
-- KEYS[1] task key   ARGV[1] base   ARGV[2] retention_ms
-- ARGV[3] task id   ARGV[4] version   ARGV[5] pid
-- ARGV[6] '1' when the delivery failed (undecodable params, unknown function), '0' otherwise
-- ARGV[7] reason   ARGV[8] max failures
-- ARGV[9] delay ms (0 = at once): with a delay the task waits in state 'delayed' (in the
--         delayed zset, no stream entry) and the sweeper delivers it again at that time; used
--         for a call this worker cannot serve (a rolling deploy: another worker may)
-- Returns 'released' (a fresh entry is on the stream for any worker, or will be after the
-- delay) or 'dead' (dead-lettered, promise rejected with the reason).
-- Guarantees: fenced; a clean release does not count as a delivery, so shutting workers down
-- never pushes a task toward the dead-letter stream; a failed one counts toward max failures.
local tid, v, pid, failed, reason, maxf = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7],
                                          tonumber(ARGV[8])
local delay = tonumber(ARGV[9] or '0')
if not holds(tid, v, pid) then return fenced_error(tid, v, pid) end
local tk = k_task(tid)
local t = redis.call('HMGET', tk, 'group', 'eid')
if failed == '1' then
  local fails = redis.call('HINCRBY', tk, 'fails', 1)
  if fails >= maxf then
    dead_letter(tid, t[1], t[2], reason .. ' (after ' .. fails .. ' deliveries)', now_ms(),
                nil, 'refused')
    return 'dead'
  end
else
  redis.call('HINCRBY', tk, 'strikes', -1)  -- this delivery ended cleanly: not a strike
end
drop_entry(t[1], t[2])
if delay > 0 then
  redis.call('HSET', tk, 'state', 'delayed', 'eid', '', 'pid', '')
  redis.call('ZADD', K_DELAYED, now_ms() + delay, tid)
  wake_if_first(K_DELAYED, tid, delay)
else
  deliver(tid, t[1])
end
return 'released'
