-- Shared helpers, prepended to every script when it is loaded (scripts cannot
-- call each other, and helpers must be local: Redis forbids script globals).
--
-- Keys built here: job records are `prefix .. id` for ids that are only known
-- inside a script (popped from an index). Every other key arrives in KEYS.

local PRIORITY_BAND = 4398046511104 -- 2^42 sequence numbers per priority level

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


-- The success path: record the result if the claim token still holds the job.
-- k = {job, active, completed, waiters, done, events}
-- a = {id, token, result, ttl_ms, prefix, max_completed, events_len, queue, duration_ms}
-- Returns 1 when written (or already written with this token), 0 for a stale token.
local function complete_job(k, a, now)
    -- Every redis.call costs several microseconds of script overhead: this path makes
    -- as few as it can. The waiter count lives in the record ('w') for the same reason.
    local st, tok, waiting = unpack(redis.call('HMGET', k[1], 'st', 'tok', 'w'))
    if tok ~= a[2] then return 0 end
    if st == 'completed' then return 1 end
    if st ~= 'active' then return 0 end
    local ttl = tonumber(a[4])
    redis.call('ZREM', k[2], a[1])
    redis.call('HSET', k[1], 'st', 'completed', 'res', a[3], 'tf', now)
    redis.call('PEXPIRE', k[1], ttl)
    redis.call('ZADD', k[3], now + ttl, a[1])
    -- The completed index is bounded (count and age) by the supervisors' sweep
    -- (trim.lua, every few seconds); each record also expires on its own TTL.
    if waiting then notify(k[1], k[5], waiting) end
    emit(k[6], a[7], 'e', 'completed', 'id', a[1], 'q', a[8], 'ms', a[9])
    return 1
end

-- Claim at most one job from the first non-empty, unpaused queue, in the order given.
-- queues = list of {queued, active, wake, name}; claim_key remembers what this token
-- claimed, so a resent claim (its first reply lost) returns the same job, not a second.
-- Returns nil, or {queue position, id, spec, attempts, priority, errors, enqueued ms, now}.
local function claim_job(queues, paused, events, claim_key, prefix, token, lease_ms,
                         events_len, now)
    local n = #queues
    local earlier = redis.call('GET', claim_key)
    if earlier then
        local f = redis.call('HMGET', prefix .. earlier, 'st', 'spec', 'pri', 'errs', 'te',
            'att', 'tok', 'q')
        if f[1] == 'active' and f[7] == token then
            for q = 1, n do
                if queues[q][4] == f[8] then
                    return {q, earlier, f[2], tonumber(f[6]), f[3], f[4], f[5], now}
                end
            end
        end
        return nil
    end
    for q = 1, n do
        local queued, active, wake_key, name = unpack(queues[q])
        if redis.call('SISMEMBER', paused, name) == 0 then
            while true do
                local popped = redis.call('ZPOPMIN', queued, 1)
                local id = popped[1]
                if not id then break end
                local job = prefix .. id
                local f = redis.call('HMGET', job, 'st', 'spec', 'pri', 'errs', 'te', 'att')
                -- An entry whose record is gone or not queued (deleted by hand) is dropped.
                if f[1] == 'queued' then
                    local attempts = tonumber(f[6] or '0') + 1
                    redis.call('HSET', job, 'st', 'active', 'tok', token, 'ts', now,
                        'att', attempts)
                    redis.call('ZADD', active, now + tonumber(lease_ms), id)
                    redis.call('SET', claim_key, id, 'PX', math.max(tonumber(lease_ms), 1))
                    -- Wake tokens only need trimming once the queue is empty: while it has
                    -- jobs, workers are busy, not blocked, so extra tokens cost nothing.
                    if redis.call('ZCARD', queued) == 0 then
                        redis.call('DEL', wake_key)
                    end
                    -- A wake token of another queue may have brought this worker here:
                    -- keep the other queues' tokens topped up so their workers still wake.
                    for o = 1, n do
                        if o ~= q then wake(queues[o][3], queues[o][1]) end
                    end
                    emit(events, events_len, 'e', 'started', 'id', id, 'q', name,
                        'att', attempts, 'w', token)
                    return {q, id, f[2], attempts, f[3], f[4], f[5], now}
                end
            end
        end
    end
    return nil
end

-- KEYS from first_key to last_key as (queued, active, wake) triples, with the queue
-- names from ARGV[name_offset + 1] on.
local function queue_list(first_key, last_key, name_offset)
    local queues = {}
    for i = first_key, last_key, 3 do
        local q = #queues + 1
        queues[q] = {KEYS[i], KEYS[i + 1], KEYS[i + 2], ARGV[name_offset + q]}
    end
    return queues
end

