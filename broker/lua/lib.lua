-- lib.lua: helpers prepended to every script (by broker/scripts.py); not a script of its own.
--
-- Every script receives ARGV[1] = base (the shard's hash tag, e.g. "{lb:0}") and
-- ARGV[2] = retention in ms, and builds the keys it derives below from the base. All of them
-- share the base's hash tag, so a script touches one slot. Key shapes mirror broker/keys.py.
local B = ARGV[1]
local RETENTION = tonumber(ARGV[2])
local CG = 'lb'  -- the consumer group name on every group stream

local function k_promise(id) return B .. ':p:' .. id end
local function k_task(id) return B .. ':t:' .. id end
local function k_cb(id) return B .. ':cb:' .. id end
local function k_ls(id) return B .. ':ls:' .. id end
local function k_stream(g) return B .. ':q:' .. g end
local function k_dlq(g) return B .. ':dlq:' .. g end
local function k_state(s) return B .. ':ix:s:' .. s end
local function k_tag(k, v) return B .. ':ix:t:' .. k .. '=' .. v end
local function k_inbox(c) return B .. ':inbox:' .. c end
local function k_children(root) return B .. ':ch:' .. root end
local K_TIMEOUTS = B .. ':timeouts'
local K_GC = B .. ':gc'
local K_DELAYED = B .. ':delayed'
local K_GROUPS = B .. ':groups'
local K_WAKE = B .. ':sweep-wake'
-- Calls (promises with a task: roots and ctx.rpc children; not ctx.run steps nor timers) by
-- state: one counter per state, moved in the same atomic step as the state (new_promise,
-- settle, sweep.lua's purge). For lb top / lb status and the metrics, without a scan.
local K_COUNTS = B .. ':n'
local function k_takeovers(g) return B .. ':tk:' .. g end  -- the group's last takeovers
local TAKEOVERS_KEPT = 50

-- What settle() and lazy_timeout() read of a promise, in this order.
local PROMISE_READ = {'state', 'created_at', 'tags', 'ret', 'timeout_at', 'timer'}

local FIELDS = {'id', 'state', 'param', 'ph', 'value', 'vh', 'tags', 'timeout_at',
                'created_at', 'settled_at'}

-- After adding ``member`` to a time index the sweeper serves (timeouts, delayed): if it is now
-- the earliest, wake the sweeper (blocked on K_WAKE until the deadline it knew). One token at
-- most, so the list stays bounded when no sweeper runs. A deadline ``due_in`` ms away beyond
-- SWEEP_IDLE_MS is never needed sooner than the sweeper's own next pass: no check at all (the
-- common create, with a default timeout of a day, pays nothing for this).
local SWEEP_IDLE_MS = 1000  -- = sdk/worker.py SWEEP_IDLE_S
local function wake_if_first(zkey, member, due_in)
  if due_in > SWEEP_IDLE_MS then return end
  if redis.call('ZRANGE', zkey, 0, 0)[1] == member and redis.call('LLEN', K_WAKE) == 0 then
    redis.call('RPUSH', K_WAKE, '1')
  end
end

-- An integer as the string Redis would store: a Lua number passed to redis.call is formatted
-- with %.17g (~0.37 us an argument on Redis 7.0), this with %d (~0.1 us); literals go as
-- strings ('0', '1') for the same reason. The hot transitions (create, settle) use it.
local function int_s(x) return string.format('%d', x) end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The promise as a flat array in FIELDS order, or false when it does not exist.
local function record(id)
  local r = redis.call('HMGET', k_promise(id), unpack(FIELDS))
  if not r[2] then return false end
  return r
end

local function ensure_group(group)
  if redis.call('SADD', K_GROUPS, group) == 1 then
    redis.pcall('XGROUP', 'CREATE', k_stream(group), CG, '0', 'MKSTREAM')
  end
end

-- Add an entry naming task ``tid`` to its group's stream; returns the entry id. The stream
-- is there for every call but a group's first (NOMKSTREAM answers nil without it): only
-- then is the group registered and its consumer group made, so that a call of a known group
-- costs one command here, not two.
-- ``call`` (a call's first delivery only, new_promise()): the fields that let a worker run it
-- straight from the entry, without an acquire (see held()).
local function add_entry(tid, group, call)
  local f = call or {'t', tid}
  local eid = redis.call('XADD', k_stream(group), 'NOMKSTREAM', '*', unpack(f))
  if eid then return eid end
  ensure_group(group)
  return redis.call('XADD', k_stream(group), '*', unpack(f))
end

-- A stream entry's fields (as XRANGE / XREADGROUP give them): the task it names (false when
-- none) and whether it carries its call (a first delivery, add_entry() with ``call``).
local function entry_of(fields)
  local tid, fast = false, false
  for j = 1, #(fields or {}), 2 do
    if fields[j] == 't' then tid = fields[j + 1] elseif fields[j] == 'p' then fast = true end
  end
  return tid, fast
end

-- Record a first delivery run straight from its entry as acquired by ``pid`` (version 1,
-- strike 1: what claim() records for a first delivery). The one write of the fast path:
-- held() (the holder's own first write), requeue.lua and takeover.lua (in a dead or silent
-- reader's name); heartbeat.lua spells it out.
local function acquire_first(tid, pid)
  redis.call('HSET', k_task(tid), 'state', 'acquired', 'v', 1, 'pid', pid, 'strikes', 1)
end

-- Put a task (back) on its group's stream as a fresh entry; returns the entry id.
local function deliver(tid, group)
  local eid = add_entry(tid, group)
  redis.call('HSET', k_task(tid), 'state', 'pending', 'eid', eid, 'pid', '')
  return eid
end

-- A settled promise wakes each task suspended on it.
local function resume(tid)
  local t = redis.call('HMGET', k_task(tid), 'state', 'group')
  if t[1] == 'suspended' then deliver(tid, t[2]) end
end

local function drop_entry(group, eid)
  if eid and eid ~= '' then
    redis.call('XACK', k_stream(group), CG, eid)
    redis.call('XDEL', k_stream(group), eid)
  end
end

-- The retention of call ``root``: its own (field 'ret', set at create by a per-call option)
-- or the caller's default (ARGV[2]).
local function retention_of(root)
  return tonumber(redis.call('HGET', k_promise(root), 'ret')) or RETENTION
end

-- Schedule a settled promise (and a task hash it kept: a rejected call's, for the post-mortem)
-- for purge at now + ``ret`` ms. The PEXPIREs are a safety net only: the sweeper deletes the
-- promise, its task and its index entries at that time. ``no_task``: it has none (a resolved
-- call's went at settle; a step never had one), so no PEXPIRE is spent on it.
local function retain(id, now, ret, no_task)
  redis.call('ZADD', K_GC, int_s(now + ret), id)
  local ttl = int_s(ret + 86400000)
  redis.call('PEXPIRE', k_promise(id), ttl)
  if not no_task then redis.call('PEXPIRE', k_task(id), ttl) end
end

-- Settle a pending promise exactly once. Returns the resulting state, or false if missing.
-- Side effects, all in this one atomic step: indexes moved, timeout dropped, retention set,
-- the promise's own task completed (its stream entry acked and deleted), suspended tasks
-- resumed (callbacks), waiting clients notified (listeners).
-- ``cur`` and ``t``, when given, are this call's own reads of the promise (PROMISE_READ order)
-- and of its task ({state, group, eid}), made earlier in the same script: not read again.
local function settle(id, state, value, vh, now, cur, t)
  local pk = k_promise(id)
  cur = cur or redis.call('HMGET', pk, unpack(PROMISE_READ))
  if not cur[1] then return false end
  if cur[1] ~= 'pending' then return cur[1] end
  local tk = k_task(id)
  t = t or redis.call('HMGET', tk, 'state', 'group', 'eid')
  -- A resolved call keeps its value, not its arguments (memory); a rejected one keeps both,
  -- for the post-mortem. A call's promise names its group ('g', set here too for a call
  -- created by a version before new_promise did), which outlives a resolved call's task.
  local f = {'state', state, 'value', value, 'vh', vh, 'settled_at', int_s(now)}
  if state == 'resolved' then f[#f + 1] = 'param'; f[#f + 1] = ''; f[#f + 1] = 'ph'; f[#f + 1] = '' end
  if t[1] then f[#f + 1] = 'g'; f[#f + 1] = t[2] end
  redis.call('HSET', pk, unpack(f))
  redis.call('ZREM', k_state('pending'), id)
  redis.call('ZADD', k_state(state), cur[2], id)
  redis.call('ZREM', K_TIMEOUTS, id)
  if t[1] then
    redis.call('HINCRBY', K_COUNTS, 'pending', '-1')
    redis.call('HINCRBY', K_COUNTS, state, '1')
  end
  local no_task = not t[1]
  if t[1] and t[1] ~= 'fulfilled' then
    drop_entry(t[2], t[3])
    if state == 'resolved' then
      -- Done, and nothing to look back on: the hash goes (a resolved call is its promise
      -- alone). A holder's next write or heartbeat finds no task: FENCED / lost.
      redis.call('DEL', tk)
      no_task = true
    else  -- a rejected call keeps its attempts, deaths, dead holder... for the post-mortem
      redis.call('HSET', tk, 'state', 'fulfilled', 'eid', '', 'pid', '')
    end
  end
  -- Retention rule: a step lives at least as long as its root is pending, then the root's
  -- retention. A root (or a step whose root is gone or settled) is retained from now on; a
  -- step of a pending root is parked in ch:<root> until the root settles.
  local root = string.match(id, '^([^:]*):')
  local own_ret = tonumber(cur[4]) or RETENTION  -- retention_of(id), already read
  if root and redis.call('HGET', k_promise(root), 'state') == 'pending' then
    redis.call('SADD', k_children(root), id)
  else
    retain(id, now, root and retention_of(root) or own_ret, no_task)
  end
  -- Parked steps, suspended callers and waiting clients are rare: one EXISTS answers for all
  -- three (a step has no parked steps of its own), so a fire-and-forget call pays one command.
  -- A waiting client (every rpc) is read next; the count says whether anything else is there.
  local kids_key = not root and k_children(id) or nil
  local rare = kids_key and redis.call('EXISTS', kids_key, k_cb(id), k_ls(id))
               or redis.call('EXISTS', k_cb(id), k_ls(id))
  if rare == 0 then return state end
  local ls = redis.call('SMEMBERS', k_ls(id))
  if #ls > 0 then
    local msg = cmsgpack.pack({id, state, value, vh, now})
    for _, cid in ipairs(ls) do
      redis.call('RPUSH', k_inbox(cid), msg)
      redis.call('PEXPIRE', k_inbox(cid), 600000)
    end
    redis.call('DEL', k_ls(id))
    rare = rare - 1
  end
  if rare > 0 then
    if kids_key then
      local kids = redis.call('SMEMBERS', kids_key)
      if #kids > 0 then
        local ret = own_ret
        for _, kid in ipairs(kids) do retain(kid, now, ret) end
        redis.call('DEL', kids_key)
      end
    end
    local cbs = redis.call('SMEMBERS', k_cb(id))
    if #cbs > 0 then
      for _, tid in ipairs(cbs) do resume(tid) end
      redis.call('DEL', k_cb(id))
    end
  end
  return state
end

-- Settle a pending promise whose deadline passed: timers resolve, others time out.
-- Returns the state after that (false when the promise does not exist).
-- Also returns its read of the promise (PROMISE_READ order) while it is still pending, for a
-- settle() in the same script.
local function lazy_timeout(id, now)
  local p = redis.call('HMGET', k_promise(id), unpack(PROMISE_READ))
  if p[1] == 'pending' and tonumber(p[5]) <= now then
    if p[6] == '1' then
      return settle(id, 'resolved', '', '', now, p)
    end
    return settle(id, 'rejected_timedout', '', '', now, p)
  end
  return p[1] or false, p
end

-- The largest params (with their headers) a call's first stream entry carries: a call holds
-- them twice (promise and entry) until that first delivery ends (settled, requeued, released).
local FAST_PARAM_MAX = 4096

-- Store a new pending promise (indexes, deadline) and, with a group, its task on the stream.
-- The deadline is now + timeout, capped at ``cap`` (absolute ms; a step's parent deadline) when
-- one is given, so that a step never outlives the call it belongs to.
local function new_promise(id, param, ph, tags, timeout, group, timer, now, cap, ret)
  local timeout_at = now + timeout
  if cap and cap < timeout_at then timeout_at = cap end
  local ta, ns = int_s(timeout_at), int_s(now)
  local f = {'id', id, 'state', 'pending', 'param', param, 'ph', ph, 'value', '', 'vh', '',
             'tags', tags, 'timeout_at', ta, 'created_at', ns, 'settled_at', '0',
             'timer', timer}
  if ret then f[#f + 1] = 'ret'; f[#f + 1] = ret end
  -- A call's promise names its group ('g'): it outlives the task hash, which goes at settle.
  if group ~= '' then f[#f + 1] = 'g'; f[#f + 1] = group end
  redis.call('HSET', k_promise(id), unpack(f))
  redis.call('ZADD', k_state('pending'), ns, id)
  redis.call('ZADD', K_TIMEOUTS, ta, id)
  wake_if_first(K_TIMEOUTS, id, timeout_at - now)
  if tags ~= '' then
    for k, v in pairs(cjson.decode(tags)) do
      redis.call('ZADD', k_tag(k, tostring(v)), now, id)
    end
  end
  if group ~= '' then  -- deliver(), with the task's first write folded in
    -- The first delivery carries the call (params up to FAST_PARAM_MAX bytes: a larger one
    -- is read from the promise by an acquire), so that a worker runs it at once (held()).
    local call = nil
    if #param + #ph <= FAST_PARAM_MAX then
      call = {'t', id, 'p', param, 'd', ta}
      if ph ~= '' then call[#call + 1] = 'h'; call[#call + 1] = ph end
    end
    local eid = add_entry(id, group, call)
    redis.call('HSET', k_task(id), 'state', 'pending', 'v', '0', 'pid', '', 'group', group,
               'eid', eid, 'strikes', '0', 'fails', '0', 'created_at', ns)
    redis.call('HINCRBY', K_COUNTS, 'pending', '1')
  end
  return {id, 'pending', param, ph, '', '', tags, timeout_at, now, 0}  -- as record(id) reads it
end

-- Move a task's entry to its group's dead-letter stream and reject its promise (error type
-- ``etype``, default DeadLettered; Quarantined for a call that kept killing its workers).
-- Counted per group and kind in stats:<group> (field dlq:<kind>: quarantined, deliveries,
-- refused, garbage), for the metrics.
local function count_dead(group, kind)
  redis.call('HINCRBY', B .. ':stats:' .. group, 'dlq:' .. kind, 1)
  redis.call('PEXPIRE', B .. ':stats:' .. group, RETENTION)
end

local function dead_letter(tid, group, eid, reason, now, etype, kind)
  redis.call('XADD', k_dlq(group), 'MAXLEN', '~', '10000', '*', 't', tid, 'eid', eid or '',
             'reason', reason, 'at', now)
  count_dead(group, kind or (etype == 'Quarantined' and 'quarantined') or 'deliveries')
  drop_entry(group, eid)
  redis.call('HSET', k_task(tid), 'eid', '')
  local value = cmsgpack.pack({type = etype or 'DeadLettered', message = reason})
  settle(tid, 'rejected', value, '', now)
end

-- The claim transition, shared by acquire and takeover: entry ``eid`` (already in ``pid``'s
-- pending list) of pending-or-lapsed task ``tid`` becomes the task held by ``pid`` at a new
-- version. A promise past its deadline is timed out instead (its entry dropped: 'skip').
-- ``strikes`` counts deliveries in a row that ended in nothing (no completion, suspension or
-- clean release) including this one; past ``maxd`` the task is dead-lettered instead.
-- Returns the reply row: {eid, 'ok', tid, version, strikes, param, ph, timeout_at, previous
-- holder, lapses, suspect, now (the Redis clock: the claim latency is now - the entry id's ms)}, {eid, 'skip'} or {eid, 'dead', tid}; lapses = deliveries of this
-- task so far that ended in nothing; suspect = '1' when its worker died running it beside
-- other calls (requeue.lua): the claiming worker must run it alone.
-- What claim() reads of a task; acquire_entry() reads the same (its state and entry last).
local CLAIM_READ = {'strikes', 'lapses', 'v', 'suspect', 'dead', 'state', 'eid'}

local function claim(tid, eid, pid, group, now, maxd, prev, pre)
  -- One read of the promise and one of the task, one write (this runs once per call).
  local p = redis.call('HMGET', k_promise(tid), 'state', 'timeout_at', 'param', 'ph')
  if p[1] ~= 'pending' or tonumber(p[2]) <= now then
    if lazy_timeout(tid, now) ~= 'pending' then
      drop_entry(group, eid)
      return {eid, 'skip'}
    end
  end
  local tk = k_task(tid)
  -- ``pre``: acquire_entry()'s read of the task (CLAIM_READ order), else read here.
  local t = pre or redis.call('HMGET', tk, unpack(CLAIM_READ))
  local strikes = (tonumber(t[1]) or 0) + 1
  -- The delivery before this one ended in nothing (its holder died or stalled): a lapse, which
  -- ctx.attempt counts as a failed try of the function (a resume or a release is not one).
  local lapses = (tonumber(t[2]) or 0) + (strikes > 1 and 1 or 0)
  if strikes > maxd then
    redis.call('HSET', tk, 'strikes', strikes, 'lapses', lapses)
    dead_letter(tid, group, eid, (strikes - 1) .. ' deliveries in a row ended without a ' ..
                'completion, suspension or release (the worker died or stalled each time)', now)
    return {eid, 'dead', tid}
  end
  local v = (tonumber(t[3]) or 0) + 1
  redis.call('HSET', tk, 'strikes', strikes, 'lapses', lapses, 'v', v, 'state', 'acquired',
             'pid', pid)
  if t[5] then redis.call('HDEL', tk, 'dead') end
  -- A takeover: a silent holder's task taken here (prev, takeover.lua: its lease lapsed) or
  -- a dead holder's task handed back (t[5], requeue.lua: its connection was gone). Counted
  -- per worker and cause in stats:<group>; the last TAKEOVERS_KEPT kept in tk:<group>.
  local cause = 'lapsed'
  if not prev or prev == '' then prev, cause = t[5] or '', 'gone' end
  if prev ~= '' and prev ~= pid then
    local sk = B .. ':stats:' .. group
    redis.call('HINCRBY', sk, 'takeover:' .. pid, 1)
    redis.call('HINCRBY', sk, 'cause:' .. cause, 1)
    redis.call('HSET', sk, 'takeover_at:' .. pid, now, 'taken_at:' .. prev, now)
    redis.call('PEXPIRE', sk, RETENTION)
    local tkk = k_takeovers(group)
    redis.call('LPUSH', tkk, cmsgpack.pack({now, tid, prev, pid, cause}))
    redis.call('LTRIM', tkk, 0, TAKEOVERS_KEPT - 1)
    redis.call('PEXPIRE', tkk, RETENTION)
  end
  return {eid, 'ok', tid, tostring(v), strikes, p[3], p[4], p[2], prev, lapses, t[4] or '0',
          now}
end

-- Dead-letter an entry that names no task (garbage on the stream).
local function dead_entry(group, eid, tid, now)
  local p = tid ~= '' and redis.call('HMGET', k_promise(tid), 'state', 'g') or {}
  if p[2] and p[1] ~= 'pending' then
    drop_entry(group, eid)  -- a stale entry of a call resolved already (its task went then)
    return {eid, 'skip'}
  end
  redis.call('XADD', k_dlq(group), 'MAXLEN', '~', '10000', '*', 't', tid, 'eid', eid,
             'reason', 'entry names no task', 'at', now)
  count_dead(group, 'garbage')
  drop_entry(group, eid)
  return {eid, 'dead', tid}
end

-- Turn entry ``eid`` of task ``tid`` (read by ``pid`` with XREADGROUP) into a held task: the
-- claim row of claim(), or {eid, 'skip'} / {eid, 'dead', tid}. ``check_owner``: the entry was
-- read by an earlier call (acquire.lua), so it may have been acked or taken over since: an
-- entry no longer in ``pid``'s pending list is skipped untouched (a stale reader changes
-- nothing). Entries read in the same script (fulfill.lua's next claim) need no such check.
local function acquire_entry(eid, tid, pid, group, now, maxd, check_owner)
  if check_owner then
    local own = redis.call('XPENDING', k_stream(group), CG, eid, eid, 1)
    if not own[1] or own[1][2] ~= pid then return {eid, 'skip'} end
  end
  local t = false
  if tid ~= '' then t = redis.call('HMGET', k_task(tid), unpack(CLAIM_READ)) end
  if not t or not t[6] then return dead_entry(group, eid, tid, now) end
  if t[7] ~= eid then
    drop_entry(group, eid)  -- ours, and no task points at it: a stale entry
    return {eid, 'skip'}
  end
  -- The task holds this very entry already (this worker's own takeover pass claimed it while
  -- the read was stalled): leave both alone.
  if t[6] ~= 'pending' then return {eid, 'skip'} end
  -- A task requeued after its holder died names that holder (claim() reports it).
  return claim(tid, eid, pid, group, now, maxd, nil, t)
end

-- The holder's read of its task: {state, v, pid, eid, group} when (tid, v, pid) holds it right
-- now, else false. ``v`` is a version, or for a call run straight from its first stream entry
-- (the fast path: the entry carries the call, so the worker ran it without an acquire) '~'
-- followed by that entry's id. Such a delivery is acquired here, by the holder's first fenced
-- write (or heartbeat: heartbeat.lua does the same), recorded as claim() records a first
-- delivery: version 1, strikes 1, held by ``pid`` - only while the task is still pending at
-- version 0 on that very entry, and the entry is in ``pid``'s pending list (delivered to it,
-- not taken over, requeued, settled or delivered anew since). claim()'s other checks cannot
-- fail for a first delivery but its deadline: a settle times the promise out, as ever, and
-- the worker sends a call near its deadline through an acquire. From then on the '~' fence
-- matches version 1 held by ``pid`` on that entry, and nothing else.
-- ``settling``: the caller settles the task's promise in this same step (fulfill.lua), which
-- deletes or completes the task hash: the acquisition is not written, only checked.
local HELD_READ = {'state', 'v', 'pid', 'eid', 'group'}
local function held(tid, v, pid, settling)
  local tk = k_task(tid)
  local t = redis.call('HMGET', tk, unpack(HELD_READ))
  if string.byte(v, 1) ~= 126 then  -- '~'
    if t[1] == 'acquired' and t[2] == v and t[3] == pid then return t end
    return false
  end
  if t[4] ~= string.sub(v, 2) then return false end
  if t[1] == 'acquired' then
    if t[2] == '1' and t[3] == pid then return t end
    return false
  end
  if t[1] ~= 'pending' or t[2] ~= '0' then return false end
  local own = redis.call('XPENDING', k_stream(t[5]), CG, t[4], t[4], '1')
  if not own[1] or own[1][2] ~= pid then return false end
  if not settling then acquire_first(tid, pid) end
  return {'acquired', '1', pid, t[4], t[5]}
end

-- True when (tid, v, pid) is the current holder of the task (see held()).
local function holds(tid, v, pid)
  return held(tid, v, pid) ~= false
end

local function fenced_error(tid, v, pid)
  return redis.error_reply('FENCED task ' .. tid .. ' version ' .. v .. ' is no longer held by '
                           .. pid)
end
