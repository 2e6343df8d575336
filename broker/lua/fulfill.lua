-- fulfill.lua: the holder of a task settles the task's promise and completes the task.
-- KEYS[1] promise key   ARGV[1] base   ARGV[2] retention_ms
-- ARGV[3] task id   ARGV[4] version   ARGV[5] pid
-- ARGV[6] state (resolved|rejected)   ARGV[7] value   ARGV[8] value headers
-- Returns the record (lib.lua FIELDS order).
-- Guarantees: refused with FENCED unless (task id, version, pid) holds the task right now;
-- on success the promise settles (if still pending and not past its deadline: a late
-- completion finds it rejected_timedout, and the reply says so), the entry is acked and deleted
-- in the same step, so the stream keeps only backlog and in-flight work. Counts the completion
-- per worker in stats:<group> (for lb status / lb top).
local tid, v, pid, state, value, vh = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local t = redis.call('HMGET', k_task(tid), 'state', 'v', 'pid', 'group')  -- holds(), inline
if t[1] ~= 'acquired' or t[2] ~= v or t[3] ~= pid then return fenced_error(tid, v, pid) end
if state ~= 'resolved' and state ~= 'rejected' then
  return redis.error_reply('BADSTATE a task settles resolved or rejected')
end
local now = now_ms()
-- Deadline first (as get does): a holder finishing after the deadline finds it timed out.
if lazy_timeout(tid, now) == 'pending' then settle(tid, state, value, vh, now) end
local sk = B .. ':stats:' .. t[4]
redis.call('HINCRBY', sk, 'done:' .. pid, 1)
redis.call('PEXPIRE', sk, RETENTION)
return record(tid)
