-- Small helpers shared by every script: the loader puts the ones a script uses in front
-- of it (scripts cannot call each other, and helpers must be local: Redis forbids script
-- globals). The operations several scripts share have files of their own (_claim_job.lua,
-- _complete_job.lua, _after_final.lua, _limits.lua), included the same way.
--
-- Helpers take the keys they touch as parameters. The one key built here is the record
-- of a job whose id a finished-jobs index gives (trim_index); ns_of and qkey are what
-- the parts build the keys they derive from records with (see the README, "Keys built
-- inside scripts"). They mirror jobs/store/keys.py.

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
-- never-reset totals hash (Prometheus counters must only grow), by queue and by
-- function; an attempt that ran also in the duration histograms (jobs/tally.py's
-- by_field writes the same fields for completions).
local function count(stats_key, totals_key, queue, fn, outcome, duration_ms, bucket)
    local of_fn = 'fn|' .. fn .. '|'
    for _, key in ipairs({stats_key, totals_key}) do
        redis.call('HINCRBY', key, queue .. '|' .. outcome, 1)
        redis.call('HINCRBY', key, of_fn .. outcome, 1)
        if bucket ~= '' then
            redis.call('HINCRBY', key, queue .. '|d|' .. bucket, 1)
            redis.call('HINCRBY', key, queue .. '|dsum', duration_ms)
            redis.call('HINCRBY', key, of_fn .. 'd|' .. bucket, 1)
            redis.call('HINCRBY', key, of_fn .. 'dsum', duration_ms)
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

-- "ns:job:" -> "ns:", the start of every key of the namespace (keys.py's Keys.ns).
local function ns_of(prefix)
    return string.sub(prefix, 1, -5)
end

-- A queue's key of `kind` (queued, waiting, scheduled, wake, canceled, ...).
local function qkey(base, queue, kind)
    return base .. '{' .. queue .. '}:' .. kind
end

-- Put a job whose record is written on its queue, behind its priority's jobs.
local function push_queued(job, queued, wake_list, sequence, id, priority)
    redis.call('HSET', job, 'st', 'queued')
    redis.call('ZADD', queued, queue_score(priority, redis.call('INCR', sequence)), id)
    wake(wake_list, queued)
end

-- Create a queued job from inside a script (hooks, batch callbacks) unless the id exists,
-- so a hook is enqueued exactly once however often its trigger is replayed.
local function create_queued(job, queued, wake_list, sequence, queues, id, spec, queue,
                             priority, now)
    if redis.call('EXISTS', job) == 1 then return false end
    redis.call('SADD', queues, queue)
    redis.call('HSET', job, 'spec', spec, 'q', queue, 'pri', priority, 'att', 0, 'te', now)
    push_queued(job, queued, wake_list, sequence, id, priority)
    return true
end

-- Mark a job canceled (the caller took it out of its index) and tell its waiters.
local function cancel_record(job, canceled, done, id, queue, reason, now, events, events_len)
    redis.call('HSET', job, 'st', 'canceled', 'why', reason, 'tf', now)
    redis.call('HDEL', job, 'due', 'deps', 'hold')
    redis.call('ZADD', canceled, now, id)
    notify(job, done)
    emit(events, events_len, 'e', 'canceled', 'id', id, 'q', queue, 'reason', reason)
end
