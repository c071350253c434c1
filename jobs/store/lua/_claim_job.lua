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
