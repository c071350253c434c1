-- Shared helpers, prepended to every script when it is loaded (scripts cannot
-- call each other, and helpers must be local: Redis forbids script globals).
--
-- Keys built here: job records are `prefix .. id` for ids that are only known
-- inside a script (popped from an index), and the keys of workflows (dependents,
-- batches, limits) whose names depend on what a record says. They mirror
-- jobs/keys.py: the namespace base is the record prefix without its "job:".

local PRIORITY_BAND = 4398046511104 -- 2^42 sequence numbers per priority level
local MSGPACK_NIL = string.char(192) -- what a parent that failed passes on (None)

local function now_ms()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Higher priority sorts first; FIFO inside one priority by sequence number.
local function queue_score(priority, seq)
    return (1000 - tonumber(priority)) * PRIORITY_BAND + seq
end

-- Keep about one wake token per queued job so a blocked worker (BLPOP on the
-- wake list) is woken by every enqueue, and idle workers never spin on stale tokens.
local function wake(wake_key, queued_key)
    if redis.call('LLEN', wake_key) < redis.call('ZCARD', queued_key) then
        redis.call('RPUSH', wake_key, 1)
    end
end

-- Trim a wake list to the number of jobs still queued (after a claim).
local function trim_wake(wake_key, queued_key)
    local left = redis.call('ZCARD', queued_key)
    if redis.call('LLEN', wake_key) > left then
        if left == 0 then
            redis.call('DEL', wake_key)
        else
            redis.call('LTRIM', wake_key, 0, left - 1)
        end
    end
end

-- Tell result waiters (Job.result blocks on BLPOP of the done list) the job is final.
-- Waiters are counted in the record's 'w' field; ``known`` is that count when the
-- caller already read it.
local function notify(job_key, done_key, known)
    local n = tonumber(known or redis.call('HGET', job_key, 'w') or '0')
    if n > 0 then
        if n > 1000 then n = 1000 end
        local tokens = {}
        for i = 1, n do tokens[i] = 1 end
        redis.call('RPUSH', done_key, unpack(tokens))
        redis.call('PEXPIRE', done_key, 60000)
        redis.call('HDEL', job_key, 'w')
    end
end

-- Append an event to the capped events stream (max_len 0: events are off).
local function emit(events_key, max_len, ...)
    if tonumber(max_len) > 0 then
        redis.call('XADD', events_key, 'MAXLEN', '~', max_len, '*', ...)
    end
end

-- Count an outcome in this minute's statistics hash (kept two hours) and in the
-- never-reset totals hash (Prometheus counters must only grow).
local function count(stats_key, totals_key, queue, fn, outcome, duration_ms, bucket)
    for _, key in ipairs({stats_key, totals_key}) do
        redis.call('HINCRBY', key, queue .. '|' .. outcome, 1)
        redis.call('HINCRBY', key, 'fn|' .. fn .. '|' .. outcome, 1)
        if bucket ~= '' then
            redis.call('HINCRBY', key, queue .. '|d|' .. bucket, 1)
            redis.call('HINCRBY', key, queue .. '|dsum', duration_ms)
        end
    end
    redis.call('EXPIRE', stats_key, 7200, 'NX')
end

-- Signal the promoter that the earliest due time may have moved earlier.
local function poke_timers(scheduled_key, timers_key, id)
    local first = redis.call('ZRANGE', scheduled_key, 0, 0)
    if first[1] == id and redis.call('LLEN', timers_key) == 0 then
        redis.call('RPUSH', timers_key, 1)
    end
end

-- Delete a finished job's record only if it is still in that state: a custom id
-- may have been enqueued again after the old record expired.
local function drop_record(prefix, id, state)
    local job = prefix .. id
    if redis.call('HGET', job, 'st') == state then
        redis.call('DEL', job)
    end
end

-- Bound a finished-jobs index: drop entries scored below min_score and keep
-- at most max_count, deleting the job records that leave with them.
local function trim_index(index_key, prefix, state, min_score, max_count)
    local old = redis.call('ZRANGEBYSCORE', index_key, '-inf', '(' .. min_score, 'LIMIT', 0, 100)
    for _, id in ipairs(old) do
        drop_record(prefix, id, state)
        redis.call('ZREM', index_key, id)
    end
    local excess = redis.call('ZCARD', index_key) - max_count
    if excess > 0 then
        if excess > 100 then excess = 100 end
        local ids = redis.call('ZRANGE', index_key, 0, excess - 1)
        for _, id in ipairs(ids) do
            drop_record(prefix, id, state)
        end
        redis.call('ZREMRANGEBYRANK', index_key, 0, excess - 1)
    end
end


-- A job record's fields, all nil when its key holds something other than a hash (written
-- over by another program): read like a record that is gone, never an error that would
-- stop a script half-way (scripts do not roll back) and then every later call.
local function record(job, ...)
    local f = redis.pcall('HMGET', job, ...)
    if f.err then return {} end
    return f
end

-- "ns:job:" -> "ns:", the start of every key of the namespace.
local function ns_of(prefix)
    return string.sub(prefix, 1, -5)
end

local function qkey(base, queue, kind)
    return base .. '{' .. queue .. '}:' .. kind
end

-- Put a job whose record is written on its queue, behind its priority's jobs.
local function push_queued(base, job, id, queue, priority)
    local queued = qkey(base, queue, 'queued')
    redis.call('HSET', job, 'st', 'queued')
    redis.call('ZADD', queued, queue_score(priority, redis.call('INCR', base .. 'seq')), id)
    wake(qkey(base, queue, 'wake'), queued)
end

-- Create a queued job from inside a script (hooks, batch callbacks) unless the id exists,
-- so a hook is enqueued exactly once however often its trigger is replayed.
local function create_queued(base, prefix, id, spec, queue, priority, now)
    local job = prefix .. id
    if redis.call('EXISTS', job) == 1 then return false end
    redis.call('SADD', base .. 'queues', queue)
    redis.call('HSET', job, 'spec', spec, 'q', queue, 'pri', priority, 'att', 0, 'te', now)
    push_queued(base, job, id, queue, priority)
    return true
end

-- A waiting job's last parent is done: queue it, or schedule it when it asked for a delay.
local function release_waiting(base, prefix, id, now)
    local job = prefix .. id
    local queue, pri, dly, at = unpack(redis.call('HMGET', job, 'q', 'pri', 'dly', 'at'))
    redis.call('ZREM', qkey(base, queue, 'waiting'), id)
    redis.call('HDEL', job, 'deps', 'dly', 'at')
    local due = -1
    if at then due = tonumber(at) elseif dly then due = now + tonumber(dly) end
    if due > now then
        local scheduled = qkey(base, queue, 'scheduled')
        redis.call('HSET', job, 'st', 'scheduled', 'due', due)
        redis.call('ZADD', scheduled, due, id)
        poke_timers(scheduled, base .. 'timers', id)
    else
        push_queued(base, job, id, queue, pri)
    end
end

-- Mark a job canceled (the caller took it out of its index) and tell its waiters.
local function cancel_record(base, prefix, id, queue, reason, now, events_key, events_len)
    local job = prefix .. id
    redis.call('HSET', job, 'st', 'canceled', 'why', reason, 'tf', now)
    redis.call('HDEL', job, 'due', 'deps', 'hold')
    redis.call('ZADD', qkey(base, queue, 'canceled'), now, id)
    notify(job, base .. 'done:' .. id)
    emit(events_key, events_len, 'e', 'canceled', 'id', id, 'q', queue, 'reason', reason)
end

-- Count a member's final outcome in its batch; the member that completes the batch
-- enqueues the callbacks in the same step, so they are enqueued exactly once.
local function batch_member_final(base, prefix, bid, id, outcome, now, events_key, events_len)
    local bkey = base .. 'batch:' .. bid
    redis.call('HSET', prefix .. id, 'bs', outcome)
    redis.call('HINCRBY', bkey, outcome, 1)
    local total, c, d, x, fired, ttl = unpack(redis.call('HMGET', bkey, 'total', 'completed',
        'dead', 'canceled', 'fired', 'ttl'))
    if not total or fired then return end
    c, d, x = tonumber(c or '0'), tonumber(d or '0'), tonumber(x or '0')
    if c + d + x < tonumber(total) then return end
    redis.call('HSET', bkey, 'fired', 1, 'tf', now)
    local kinds = {'complete'}
    if d + x == 0 then kinds[2] = 'success' else kinds[2] = 'failure' end
    for _, kind in ipairs(kinds) do
        local spec, queue, pri = unpack(redis.call('HMGET', bkey, kind .. ':spec',
            kind .. ':q', kind .. ':pri'))
        if spec then
            create_queued(base, prefix, bid .. '.on_' .. kind, spec, queue, pri, now)
        end
    end
    notify(bkey, base .. 'done:batch:' .. bid)
    if ttl then
        redis.call('PEXPIRE', bkey, ttl)
        redis.call('PEXPIRE', bkey .. ':jobs', ttl)
    end
    emit(events_key, events_len, 'e', 'batch_finished', 'batch', bid, 'completed', c,
        'dead', d, 'canceled', x)
end

-- A job reached a final state (completed, dead or canceled): release or cancel the jobs
-- waiting on it, count it in its batch, forget a pending request to cancel it.
-- Callers call it only when the record has one of the fields 'k', 'b' or 'cx'. A canceled dependent is itself final, so the
-- cancel cascades down a chain in this one step.
local function after_final(prefix, id, outcome, now, events_key, events_len)
    local base = ns_of(prefix)
    local todo = {{id, outcome}}
    local i = 1
    while todo[i] do
        local fid, fout = todo[i][1], todo[i][2]
        i = i + 1
        local job = prefix .. fid
        local has_kids, batch, cancel_asked = unpack(redis.call('HMGET', job, 'k', 'b', 'cx'))
        if cancel_asked then
            redis.call('SREM', base .. 'cancels', fid)
            redis.call('HDEL', job, 'cx')
        end
        if has_kids then
            local kids_key = base .. 'kids:' .. fid
            local result = nil
            for _, kid in ipairs(redis.call('SMEMBERS', kids_key)) do
                local kjob = prefix .. kid
                local kst, opf, from, kq = unpack(redis.call('HMGET', kjob, 'st', 'opf', 'pr', 'q'))
                if kst == 'waiting' then
                    if fout == 'completed' or opf == 'run' then
                        if from == fid then
                            if result == nil then
                                result = fout == 'completed' and redis.call('HGET', job, 'res')
                                    or MSGPACK_NIL
                            end
                            redis.call('HSET', kjob, 'pres', result)
                        end
                        if redis.call('HINCRBY', kjob, 'deps', -1) <= 0 then
                            release_waiting(base, prefix, kid, now)
                        end
                    else
                        redis.call('ZREM', qkey(base, kq, 'waiting'), kid)
                        cancel_record(base, prefix, kid, kq, 'parent ' .. fid .. ' ended ' .. fout,
                            now, events_key, events_len)
                        todo[#todo + 1] = {kid, 'canceled'}
                    end
                end
            end
            redis.call('DEL', kids_key)
            redis.call('HDEL', job, 'k')
        end
        if batch then
            batch_member_final(base, prefix, batch, fid, fout, now, events_key, events_len)
        end
    end
end

-- Rate and concurrency limits. A definition lives in the hash base..'limits' under
-- 'fn:<function>' or 'q:<queue>' as "<count> <period ms> <most running>" (0: none).
-- A job under limits carries their names in its record ('lim', separated by '|').
local function limit_def(base, name)
    local raw = redis.call('HGET', base .. 'limits', name)
    if not raw then return nil end
    local n, period, most = string.match(raw, '^(%d+) (%d+) (%d+)')
    return tonumber(n), tonumber(period), tonumber(most)
end

-- 0 when a job under limit `name` may start now, else the ms time to look again.
-- The rate is a token bucket holding `n` tokens, refilled at n per period (GCRA form:
-- one stored "theoretical arrival time" per limit).
local function limit_check(base, name, now)
    local n, period, most = limit_def(base, name)
    if not n then return 0 end
    local lk = base .. 'limit:' .. name
    if most > 0 and redis.call('SCARD', lk .. ':active') >= most then
        return now + 1000 -- a finishing job frees a slot first; this is the safety net
    end
    if n > 0 then
        local interval = period / n
        local tat = tonumber(redis.call('GET', lk .. ':tat') or '0')
        if tat < now then tat = now end
        local allowed = tat - (period - interval)
        if allowed > now then return math.ceil(allowed) end
    end
    return 0
end

-- Take a token and a running slot of limit `name` for job `id` (after limit_check).
local function limit_take(base, name, id, now)
    local n, period, most = limit_def(base, name)
    if not n then return end
    local lk = base .. 'limit:' .. name
    if n > 0 then
        local tat = tonumber(redis.call('GET', lk .. ':tat') or '0')
        if tat < now then tat = now end
        redis.call('SET', lk .. ':tat', tostring(tat + period / n), 'PX', period * 2)
    end
    if most > 0 then redis.call('SADD', lk .. ':active', id) end
end

-- Park a queued job that a limit holds back (state stays queued, out of the queue index
-- so it never blocks the jobs behind it); the promoter looks again at `until_ms`.
local function limit_hold(base, prefix, name, id, score, until_ms)
    local lk = base .. 'limit:' .. name
    redis.call('ZADD', lk .. ':held', score, id)
    redis.call('HSET', prefix .. id, 'hold', name)
    redis.call('HINCRBY', base .. 'held', redis.call('HGET', prefix .. id, 'q'), 1)
    local due_key = base .. 'limits:due'
    redis.call('ZADD', due_key, 'LT', until_ms, name)
    if redis.call('ZRANGE', due_key, 0, 0)[1] == name
            and redis.call('LLEN', base .. 'timers') == 0 then
        redis.call('RPUSH', base .. 'timers', 1)
    end
end

-- Put up to `count` held jobs of limit `name` back in their queues, in their old places.
local function limit_release(base, prefix, name, count)
    if count < 1 then return 0 end
    local popped = redis.call('ZPOPMIN', base .. 'limit:' .. name .. ':held', count)
    local moved = 0
    for i = 1, #popped, 2 do
        local id, score = popped[i], popped[i + 1]
        local job = prefix .. id
        local st, queue, hold = unpack(record(job, 'st', 'q', 'hold'))
        if st == 'queued' and hold == name then
            redis.call('HDEL', job, 'hold')
            redis.call('HINCRBY', base .. 'held', queue, -1)
            local queued = qkey(base, queue, 'queued')
            redis.call('ZADD', queued, score, id)
            wake(qkey(base, queue, 'wake'), queued)
            moved = moved + 1
        end
    end
    return moved
end

-- A job under limits stopped running: free its slots, each to the oldest held job.
local function limit_free(base, prefix, lim, id)
    for name in string.gmatch(lim, '[^|]+') do
        if redis.call('SREM', base .. 'limit:' .. name .. ':active', id) == 1 then
            limit_release(base, prefix, name, 1)
        end
    end
end

-- Give jobs held back by rate and concurrency limits their turn (the promoter).
-- For each limit that is due: release as many held jobs as it has tokens and free
-- running slots (slots of jobs no longer running are dropped first: a safety net, since
-- every way out of 'active' frees its slot); look again later while jobs remain held.
-- Returns the jobs released and the ms until the next limit is due (-1: none).
local function release_due_limits(due_key, prefix, now)
    -- The usual case, no limit holding anything, costs one command.
    local soonest = redis.call('ZRANGE', due_key, 0, 0, 'WITHSCORES')
    if not soonest[2] then return 0, -1 end
    if tonumber(soonest[2]) > now then return 0, tonumber(soonest[2]) - now end
    local base = ns_of(prefix)
    local released = 0
    for _, name in ipairs(redis.call('ZRANGEBYSCORE', due_key, '-inf', now, 'LIMIT', 0, 100)) do
        redis.call('ZREM', due_key, name)
        local lk = base .. 'limit:' .. name
        local held_key = lk .. ':held'
        local n, period, most = limit_def(base, name)
        if not n then
            released = released + limit_release(base, prefix, name, redis.call('ZCARD', held_key))
        else
            local room = redis.call('ZCARD', held_key)
            local again = now + 1000
            if most > 0 then
                for _, id in ipairs(redis.call('SMEMBERS', lk .. ':active')) do
                    if record(prefix .. id, 'st')[1] ~= 'active' then
                        redis.call('SREM', lk .. ':active', id)
                    end
                end
                room = math.min(room, most - redis.call('SCARD', lk .. ':active'))
            end
            if n > 0 then
                local interval = period / n
                local tat = tonumber(redis.call('GET', lk .. ':tat') or '0')
                if tat < now then tat = now end
                local tokens = math.floor((now + period - tat) / interval)
                room = math.min(room, tokens)
                if tokens < 1 then
                    again = math.ceil(tat - (period - interval))
                else
                    again = math.min(again, now + math.max(math.ceil(interval), 10))
                end
            end
            released = released + limit_release(base, prefix, name, room)
            if redis.call('EXISTS', held_key) == 1 then
                redis.call('ZADD', due_key, 'LT', math.max(again, now + 1), name)
            end
        end
    end
    local first = redis.call('ZRANGE', due_key, 0, 0, 'WITHSCORES')
    local wait = -1
    if first[2] then wait = math.max(0, tonumber(first[2]) - now) end
    return released, wait
end

-- The success path: record the result if the claim token still holds the job.
-- Keys: the job's record, its queue's active and completed indexes, its result done
-- list, the events stream. Returns 1 when written (or already written with this token),
-- 0 for a stale token. ``quiet``: leave the 'completed' event to the caller
-- (finish_claim merges it with the next job's 'started' into one stream entry); the
-- second result says it was written now.
-- Positional arguments, not tables: on the hot path every table and every redis.call
-- is a measurable share of the script's cost.
local function complete_job(job, active, completed, done, events, id, token, result, ttl_ms,
                            prefix, events_len, queue, duration_ms, now, quiet)
    -- The waiter count lives in the record ('w') so that no extra command reads it.
    local st, tok, waiting, kids, batch, cx, lim = unpack(record(job, 'st', 'tok',
        'w', 'k', 'b', 'cx', 'lim'))
    if tok ~= token then return 0, false end
    if st == 'completed' then return 1, false end
    if st ~= 'active' then return 0, false end
    local ttl = tonumber(ttl_ms)
    redis.call('ZREM', active, id)
    redis.call('HSET', job, 'st', 'completed', 'res', result, 'tf', now)
    redis.call('PEXPIRE', job, ttl)
    redis.call('ZADD', completed, now + ttl, id)
    -- The completed index is bounded (count and age) by the supervisors' sweep
    -- (trim.lua, every few seconds); each record also expires on its own TTL.
    if waiting then notify(job, done, waiting) end
    if not quiet then emit(events, events_len, 'e', 'completed', 'id', id, 'q', queue,
        'ms', duration_ms) end
    if kids or batch or cx then after_final(prefix, id, 'completed', now, events, events_len) end
    if lim then limit_free(ns_of(prefix), prefix, lim, id) end
    return 1, true
end

-- The queues a claim looks at: KEYS from ``first_key`` on as (queued, active, wake)
-- triples, their names in ARGV from ``name_offset + 1`` on.
-- The job claim ``token`` took and still holds, looked for among the running jobs of
-- those queues (a resent claim is rare: no claim writes a memory of itself for it).
-- Returns the queue position and the job's id, or nil.
local function claimed_with(first_key, prefix, token)
    for q = 1, (#KEYS - first_key + 1) / 3 do
        for _, id in ipairs(redis.call('ZRANGE', KEYS[first_key + 3 * q - 2], 0, -1)) do
            if record(prefix .. id, 'tok')[1] == token then return q, id end
        end
    end
    return nil
end

-- Claim at most one job from the first non-empty, unpaused queue, in the order given
-- (the queues as ``claimed_with`` reads them). A resent claim (its first reply lost;
-- ``resent`` is '1') returns the job the first one took, not a second. ``done_id``,
-- ``done_queue``, ``done_ms``: a completion whose event rides along in the 'started'
-- entry (as p.* fields), or nil. Returns nil, or {queue position, id, spec, attempts,
-- priority, errors, enqueued ms, now, the parent's encoded result when the job asked to
-- receive it or false, the names of unreadable numeric fields or false}.
local function claim_job(first_key, name_offset, paused, events, prefix, token, lease_ms,
                         events_len, now, resent, done_id, done_queue, done_ms)
    local n = (#KEYS - first_key + 1) / 3
    if resent == '1' then
        local q, earlier = claimed_with(first_key, prefix, token)
        if earlier then
            local f = record(prefix .. earlier, 'st', 'spec', 'pri', 'errs', 'te', 'att', 'pres')
            if f[1] == 'active' then
                return {q, earlier, f[2], tonumber(f[6]), f[3], f[4], f[5], now, f[7] or false,
                    false}
            end
        end
        -- Nothing held with this token: the first call never ran (or what it took was
        -- taken back since), so this one claims.
    end
    local parked = 0
    for q = 1, n do
        local queued, active = KEYS[first_key + 3 * q - 3], KEYS[first_key + 3 * q - 2]
        local name = ARGV[name_offset + q]
        if redis.call('SISMEMBER', paused, name) == 0 then
            while true do
                local popped = redis.call('ZPOPMIN', queued, 1)
                local id = popped[1]
                if not id then break end
                local job = prefix .. id
                local f = record(job, 'st', 'spec', 'pri', 'errs', 'te', 'att',
                    'pres', 'lim')
                local held = false
                if f[1] == 'queued' and f[8] then
                    local base = ns_of(prefix)
                    for name in string.gmatch(f[8], '[^|]+') do
                        local wait_until = limit_check(base, name, now)
                        if wait_until > 0 then
                            limit_hold(base, prefix, name, id, popped[2], wait_until)
                            held = true
                            break
                        end
                    end
                    if not held then
                        for name in string.gmatch(f[8], '[^|]+') do
                            limit_take(base, name, id, now)
                        end
                    end
                end
                if held then
                    parked = parked + 1
                    if parked >= 200 then return nil end -- bounded work per call
                -- An entry whose record is gone or not queued (deleted by hand) is dropped.
                elseif f[1] == 'queued' then
                    -- Numbers that do not read as numbers (a damaged record) are named in
                    -- the reply: the worker marks the job dead with that reason.
                    local prior = tonumber(f[6] or '0')
                    local bad = false
                    if not prior or (f[3] and not tonumber(f[3]))
                            or (f[5] and not tonumber(f[5])) then
                        local names = {}
                        if not prior then names[#names + 1] = 'att' end
                        if f[3] and not tonumber(f[3]) then names[#names + 1] = 'pri' end
                        if f[5] and not tonumber(f[5]) then names[#names + 1] = 'te' end
                        bad = table.concat(names, ',')
                    end
                    local attempts = (prior or 0) + 1
                    redis.call('HSET', job, 'st', 'active', 'tok', token, 'ts', now,
                        'att', attempts)
                    redis.call('ZADD', active, now + tonumber(lease_ms), id)
                    -- A wake token of another queue may have brought this worker here:
                    -- keep the other queues' tokens topped up so their workers still wake.
                    for o = 1, n do
                        if o ~= q then
                            wake(KEYS[first_key + 3 * o - 1], KEYS[first_key + 3 * o - 3])
                        end
                    end
                    if done_id then
                        emit(events, events_len, 'e', 'started', 'id', id, 'q', name,
                            'att', attempts, 'w', token, 'p.e', 'completed', 'p.id', done_id,
                            'p.q', done_queue, 'p.ms', done_ms)
                    else
                        emit(events, events_len, 'e', 'started', 'id', id, 'q', name,
                            'att', attempts, 'w', token)
                    end
                    return {q, id, f[2], attempts, f[3], f[4], f[5], now, f[7] or false, bad}
                end
            end
        end
    end
    -- Nothing to claim: the wake tokens of the queues looked at are stale (they are
    -- trimmed here, off the hot path, so a busy worker never counts its queue).
    for q = 1, n do
        if redis.call('ZCARD', KEYS[first_key + 3 * q - 3]) == 0 then
            redis.call('DEL', KEYS[first_key + 3 * q - 1])
        end
    end
    if done_id then
        emit(events, events_len, 'e', 'completed', 'id', done_id, 'q', done_queue, 'ms', done_ms)
    end
    return nil
end
