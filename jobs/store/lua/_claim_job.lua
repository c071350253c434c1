-- Claiming: the operation of claim.lua and of finish_claim.lua (and the look-up of what a
-- claim took, for claimed_by.lua).
--
-- The queues a claim looks at are the group of its script's arguments: `keys` (the
-- script's KEYS) holds from `first_key` on the queued index, active index and wake list
-- of each queue, `names` (its ARGV) from `first_name` on their names, in claim order.
--
-- Keys built here: the record of each job a claim pops or looks for (its id is known only
-- inside), and what the limits build (_limits.lua).

-- The job claim `token` took and still holds, looked for among the running jobs of the
-- queues (a resent claim is rare: no claim writes a memory of itself for it).
-- Returns the queue's position and the job's id, or nil.
local function claimed_with(keys, first_key, prefix, token)
    local q = 0
    for at = first_key, #keys, 3 do
        q = q + 1
        for _, id in ipairs(redis.call('ZRANGE', keys[at + 1], 0, -1)) do
            if record(prefix .. id, 'tok')[1] == token then return q, id end
        end
    end
    return nil
end

-- Every job claim `token` took and still holds: the one claimed with `token` itself and
-- those of the same batch claim (`token` .. '+' .. i, finish_batch.lua). Returns a list of
-- {queue position, id}.
local function claimed_with_all(keys, first_key, prefix, token)
    local found = {}
    local batch = token .. '+'
    local q = 0
    for at = first_key, #keys, 3 do
        q = q + 1
        for _, id in ipairs(redis.call('ZRANGE', keys[at + 1], 0, -1)) do
            local tok = record(prefix .. id, 'tok')[1]
            if tok == token or (tok and string.sub(tok, 1, #batch) == batch) then
                found[#found + 1] = {q, id}
            end
        end
    end
    return found
end

-- Claim at most one job from the first non-empty, unpaused queue, in the order given.
-- A resent claim (its first reply lost; `resent` is '1') returns the job the first one
-- took, not a second. `done_id`, `done_queue`, `done_ms`: a completion whose event rides
-- along in the 'started' entry (as p.* fields), or nil. Returns nil, or {queue position,
-- id, spec, attempts, priority, errors, enqueued ms, now, the parent's encoded result
-- when the job asked to receive it or false, the names of unreadable numeric fields or
-- false, the trace context of its enqueue (jobs/tracing.py) or false}.
local function claim_job(paused, events, keys, first_key, names, first_name, prefix, token,
                         lease_ms, events_len, now, resent, done_id, done_queue, done_ms)
    if resent == '1' then
        local q, earlier = claimed_with(keys, first_key, prefix, token)
        if earlier then
            local st, spec, pri, errs, te, att, pres, tp = unpack(record(prefix .. earlier,
                'st', 'spec', 'pri', 'errs', 'te', 'att', 'pres', 'tp'))
            if st == 'active' then
                return {q, earlier, spec, tonumber(att), pri, errs, te, now, pres or false, false,
                    tp or false}
            end
        end
        -- Nothing claimed with this token: the first call never ran (or what it took
        -- was taken back since), so this one claims.
    end
    local parked = 0
    local q = 0
    for at = first_key, #keys, 3 do
        q = q + 1
        local queued, active, name = keys[at], keys[at + 1], names[first_name + q - 1]
        -- A paused queue is passed over. Of the others, an entry whose record is gone or not
        -- queued (deleted by hand) is dropped, a job a limit holds back is parked.
        local popped = false
        if redis.call('SISMEMBER', paused, name) == 0 then
            popped = redis.call('ZPOPMIN', queued, 1)
        end
        while popped and popped[1] do
            local id, score = popped[1], popped[2]
            local job = prefix .. id
            local st, spec, pri, errs, te, att, pres, lim, tp = unpack(record(job, 'st', 'spec',
                'pri', 'errs', 'te', 'att', 'pres', 'lim', 'tp'))
            if st == 'queued' and lim and not limits_admit(prefix, lim, id, score, now) then
                parked = parked + 1
                if parked >= 200 then return nil end -- bounded work per call
            elseif st == 'queued' then
                -- Numbers that do not read as numbers (a damaged record) are named in the
                -- reply: the worker marks the job dead with that reason.
                local prior = tonumber(att or '0')
                local bad = false
                if not prior or (pri and not tonumber(pri)) or (te and not tonumber(te)) then
                    local which = {}
                    if not prior then which[#which + 1] = 'att' end
                    if pri and not tonumber(pri) then which[#which + 1] = 'pri' end
                    if te and not tonumber(te) then which[#which + 1] = 'te' end
                    bad = table.concat(which, ',')
                end
                local attempts = (prior or 0) + 1
                -- 'qs': its place in the queue, so a job given back unstarted (a batch's,
                -- release.lua) takes that place again, not one behind later jobs.
                redis.call('HSET', job, 'st', 'active', 'tok', token, 'ts', now, 'att', attempts,
                    'qs', score)
                redis.call('ZADD', active, now + tonumber(lease_ms), id)
                -- A wake token of another queue may have brought this worker here: keep
                -- the other queues' tokens topped up so their workers still wake.
                for other = first_key, #keys, 3 do
                    if other ~= at then wake(keys[other + 2], keys[other]) end
                end
                if done_id then
                    emit(events, events_len, 'e', 'started', 'id', id, 'q', name, 'att', attempts,
                        'w', token, 'p.e', 'completed', 'p.id', done_id, 'p.q', done_queue,
                        'p.ms', done_ms)
                else
                    emit(events, events_len, 'e', 'started', 'id', id, 'q', name, 'att', attempts,
                        'w', token)
                end
                return {q, id, spec, attempts, pri, errs, te, now, pres or false, bad, tp or false}
            end
            popped = redis.call('ZPOPMIN', queued, 1)
        end
    end
    -- Nothing to claim: the wake tokens of the queues looked at are stale (they are
    -- trimmed here, off the hot path, so a busy worker never counts its queue).
    for at = first_key, #keys, 3 do
        if redis.call('ZCARD', keys[at]) == 0 then redis.call('DEL', keys[at + 2]) end
    end
    if done_id then
        emit(events, events_len, 'e', 'completed', 'id', done_id, 'q', done_queue, 'ms', done_ms)
    end
    return nil
end
