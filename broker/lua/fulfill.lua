-- fulfill.lua: the holder of a task settles the task's promise and completes the task.
-- KEYS[1] promise key   ARGV[1] base   ARGV[2] retention_ms
-- ARGV[3] task id   ARGV[4] version (or '~' .. entry id: a fast delivery, see held())   ARGV[5] pid
-- ARGV[6] state (resolved|rejected)   ARGV[7] value   ARGV[8] value headers
-- ARGV[9] '1': in the same step, claim the next entry of the task's group for this worker
--         (the slot this completion frees; a worker under load completes one call and
--         gets the next in one round trip, with no XREADGROUP or acquire of its own)
--         ARGV[9] '-': reply with the promise's state alone (a worker's completion needs no
--         more; reading the record back would cost a command and send the value back)
-- ARGV[10] max deliveries (with ARGV[9])
-- Returns the record (lib.lua FIELDS order); with ARGV[9] = '1', {state, rows}: the
-- promise's state after this call and at most one claim row (acquire.lua's shapes); with
-- ARGV[9] = '-', that state (nil when the promise is gone).
-- Guarantees: refused with FENCED unless (task id, version, pid) holds the task right now;
-- on success the promise settles (if still pending and not past its deadline: a late
-- completion finds it rejected_timedout, and the reply says so), the entry is acked and deleted
-- in the same step, so the stream keeps only backlog and in-flight work. Counts the completion
-- per worker in stats:<group> (for lb status / lb top); heartbeat.lua renews its expiry.
local tid, v, pid, state, value, vh = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
-- {state, v, pid, eid, group}; a fast delivery is held from here on, its acquisition not
-- written: the settle below, in this same step, deletes or completes the task hash (a
-- promise missing altogether changes nothing, as before).
local t = held(tid, v, pid, true)
if not t then return fenced_error(tid, v, pid) end
if state ~= 'resolved' and state ~= 'rejected' then
  return redis.error_reply('BADSTATE a task settles resolved or rejected')
end
local now = now_ms()
-- Deadline first (as get does): a holder finishing after the deadline finds it timed out.
local final, cur = lazy_timeout(tid, now)
if final == 'pending' then final = settle(tid, state, value, vh, now, cur, {t[1], t[5], t[4]}) end
local sk = B .. ':stats:' .. t[5]
-- The heartbeats of the group's workers renew the expiry; here only a worker's first count
-- sets it (it may have created the key).
if redis.call('HINCRBY', sk, 'done:' .. pid, '1') == 1 then redis.call('PEXPIRE', sk, RETENTION) end
if ARGV[9] == '-' then return final end
if ARGV[9] ~= '1' then return record(tid) end
local rows = {}
-- Only entries never delivered ('>'): what blocked readers did not get. pcall: a stream or
-- group deleted by hand is NOGROUP; the worker's own read loop recreates it.
local ok, got = pcall(redis.call, 'XREADGROUP', 'GROUP', CG, pid, 'COUNT', '1', 'STREAMS',
                      k_stream(t[5]), '>')
if ok and got and got[1] then
  for _, e in ipairs(got[1][2]) do
    local next_tid = entry_of(e[2]) or ''
    table.insert(rows, acquire_entry(e[1], next_tid, pid, t[5], now, tonumber(ARGV[10]), false))
  end
end
return {final, rows}
