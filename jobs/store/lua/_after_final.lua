-- What follows a job's final state (completed, dead or canceled): its dependents are
-- released or canceled, its batch counts it (and fires the callbacks when it is the last).
--
-- Keys built here, from the namespace base: those named by what records hold (the
-- records, result done lists and `kids:` sets of dependents and batch members, the
-- indexes of their queues, a batch's keys) and the namespace keys this work touches
-- (seq, queues, timers, cancels, batches, batches:ending). It runs inside complete and
-- finish_claim only when a record asks for it: sending its keys with every call would
-- cost the hot path.

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
        push_queued(job, qkey(base, queue, 'queued'), qkey(base, queue, 'wake'), base .. 'seq',
            id, pri)
    end
end

-- A finished batch's id leaves the index of batches when its record expires; each batch
-- that finishes drops up to 100 ids whose time has come, so the index keeps up.
local function index_ending_batch(base, bid, expires_at, now)
    local batches, ending = base .. 'batches', base .. 'batches:ending'
    redis.call('ZADD', ending, expires_at, bid)
    local gone = redis.call('ZRANGEBYSCORE', ending, '-inf', now, 'LIMIT', 0, 100)
    if #gone > 0 then
        redis.call('ZREM', ending, unpack(gone))
        redis.call('ZREM', batches, unpack(gone))
    end
end

-- Count a member's final outcome in its batch; the member that completes the batch
-- enqueues the callbacks in the same step, so they are enqueued exactly once.
local function batch_member_final(base, prefix, bid, id, outcome, now, events, events_len)
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
            local cid = bid .. '.on_' .. kind
            create_queued(prefix .. cid, qkey(base, queue, 'queued'), qkey(base, queue, 'wake'),
                base .. 'seq', base .. 'queues', cid, spec, queue, pri, now)
        end
    end
    notify(bkey, base .. 'done:batch:' .. bid)
    if ttl then
        redis.call('PEXPIRE', bkey, ttl)
        redis.call('PEXPIRE', bkey .. ':jobs', ttl)
        index_ending_batch(base, bid, now + tonumber(ttl), now)
    end
    emit(events, events_len, 'e', 'batch_finished', 'batch', bid, 'completed', c,
        'dead', d, 'canceled', x)
end

-- A job reached a final state (completed, dead or canceled): release or cancel the jobs
-- waiting on it, count it in its batch, forget a pending request to cancel it.
-- Callers call it only when the record has one of the fields 'k', 'b' or 'cx'. A canceled
-- dependent is itself final, so the cancel cascades down a chain in this one step.
local function after_final(prefix, id, outcome, now, events, events_len)
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
                        cancel_record(kjob, qkey(base, kq, 'canceled'), base .. 'done:' .. kid,
                            kid, kq, 'parent ' .. fid .. ' ended ' .. fout, now, events,
                            events_len)
                        todo[#todo + 1] = {kid, 'canceled'}
                    end
                end
            end
            redis.call('DEL', kids_key)
            redis.call('HDEL', job, 'k')
        end
        if batch then
            batch_member_final(base, prefix, batch, fid, fout, now, events, events_len)
        end
    end
end
