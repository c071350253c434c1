-- Rate and concurrency limits: checked and taken when a job is claimed, held jobs parked
-- and released, slots freed when a job stops running.
--
-- Keys built here, from the namespace base: a limit's keys (`limit:<name>:starts`,
-- `:tat`, `:active`, `:held`, named by a job's 'lim' or 'hold' field or the due set), the
-- records of held jobs and their queues' indexes, and the namespace keys of limits
-- (limits, held, limits:due, timers). Limits run inside claim, finish_claim and complete
-- only for jobs that carry one: sending their keys with every call would cost the hot path.

-- Rate and concurrency limits. A definition lives in the hash base..'limits' under
-- 'fn:<function>', 'q:<queue>' or 'n:<name>' as "<count> <period ms> <most running>
-- <burst>" (0: none; a definition without a burst has none). A job under limits carries
-- their names in its record ('lim', separated by '|').
local function limit_def(base, name)
    local raw = redis.call('HGET', base .. 'limits', name)
    if not raw then return nil end
    local n, period, most, burst = string.match(raw, '^(%d+) (%d+) (%d+) ?(%d*)')
    return tonumber(n), tonumber(period), tonumber(most), tonumber(burst) or 0
end

-- 0 when a job under limit `name` may start now, else the ms time to look again.
-- The rate, without a burst, is a sliding window: a start may come once the n-th start
-- before it is a period old, so no window of the period ever holds more than n starts
-- (the last n start times are kept, oldest first). With a burst it is a token bucket
-- holding `burst` tokens, refilled at n per period (GCRA form: one stored "theoretical
-- arrival time" per limit).
local function limit_check(base, name, now)
    local n, period, most, burst = limit_def(base, name)
    if not n then return 0 end
    local lk = base .. 'limit:' .. name
    if most > 0 and redis.call('SCARD', lk .. ':active') >= most then
        return now + 1000 -- a finishing job frees a slot first; this is the safety net
    end
    if n > 0 and burst > 0 then
        local interval = period / n
        local tat = tonumber(redis.call('GET', lk .. ':tat') or '0')
        if tat < now then tat = now end
        local allowed = tat - (burst - 1) * interval
        if allowed > now then return math.ceil(allowed) end
    elseif n > 0 then
        -- Nothing when fewer than n starts are kept (LRANGE and the rest: commands the
        -- documented ACL roles already grant).
        local nth = tonumber(redis.call('LRANGE', lk .. ':starts', -n, -n)[1])
        if nth and nth + period > now then return nth + period end
    end
    return 0
end

-- Take a start and a running slot of limit `name` for job `id` (after limit_check).
local function limit_take(base, name, id, now)
    local n, period, most, burst = limit_def(base, name)
    if not n then return end
    local lk = base .. 'limit:' .. name
    if n > 0 and burst > 0 then
        local tat = tonumber(redis.call('GET', lk .. ':tat') or '0')
        if tat < now then tat = now end
        tat = tat + period / n
        redis.call('SET', lk .. ':tat', tostring(tat), 'PX', math.ceil(tat - now) + 1)
    elseif n > 0 then
        local starts = lk .. ':starts'
        redis.call('RPUSH', starts, now)
        redis.call('LTRIM', starts, -n, -1)
        redis.call('PEXPIRE', starts, period)
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

-- A queued job under the limits named in `lim` may start now: take its tokens and running
-- slots and return true; else park it with the first limit that holds it back, false.
local function limits_admit(prefix, lim, id, score, now)
    local base = ns_of(prefix)
    for name in string.gmatch(lim, '[^|]+') do
        local wait_until = limit_check(base, name, now)
        if wait_until > 0 then
            limit_hold(base, prefix, name, id, score, wait_until)
            return false
        end
    end
    for name in string.gmatch(lim, '[^|]+') do
        limit_take(base, name, id, now)
    end
    return true
end

-- Put up to `up_to` held jobs of limit `name` back in their queues, in their old places.
local function limit_release(base, prefix, name, up_to)
    if up_to < 1 then return 0 end
    local popped = redis.call('ZPOPMIN', base .. 'limit:' .. name .. ':held', up_to)
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

-- Of `want` held jobs, how many the rate of a limit (keys `lk`) lets go now, and the ms
-- time to look again. Sliding window: the slots of the last n starts that left the
-- window, looked at oldest first; token bucket: its tokens.
local function rate_room(lk, n, period, burst, want, now)
    if burst > 0 then
        local interval = period / n
        local tat = tonumber(redis.call('GET', lk .. ':tat') or '0')
        if tat < now then tat = now end
        local tokens = math.floor((now + burst * interval - tat) / interval)
        if tokens < 1 then return 0, math.ceil(tat - (burst - 1) * interval) end
        return math.min(want, tokens), now + math.max(math.ceil(interval), 10)
    end
    local starts = lk .. ':starts'
    local len = redis.call('LLEN', starts)
    local free = math.max(0, n - len) -- slots no start has used yet
    local at = math.max(0, len - n) -- the oldest of the last n starts
    while free < want and at < len do
        local to = math.min(len, at + math.min(want - free, 100)) - 1
        for _, t in ipairs(redis.call('LRANGE', starts, at, to)) do
            local leaves = tonumber(t) + period
            if leaves > now then return free, leaves end
            free = free + 1
        end
        at = to + 1
    end
    -- The jobs let go take the free slots; the next frees a period after they start.
    return math.min(free, want), now + period
end

-- Give jobs held back by rate and concurrency limits their turn (the promoter).
-- For each limit that is due: release as many held jobs as its rate lets start and its
-- free running slots allow (slots of jobs no longer running are dropped first: a safety
-- net, since every way out of 'active' frees its slot); look again later while jobs
-- remain held. Returns the jobs released and the ms until the next limit is due (-1: none).
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
        local n, period, most, burst = limit_def(base, name)
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
            if n > 0 and room > 0 then
                local next_at
                room, next_at = rate_room(lk, n, period, burst, room, now)
                if room < 1 then again = next_at else again = math.min(again, next_at) end
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
