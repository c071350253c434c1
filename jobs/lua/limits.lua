-- Give jobs held back by rate and concurrency limits their turn (run by the promoter).
-- KEYS[1] the limits' due times (limit name -> ms when to look again)
-- ARGV[1] job record prefix
-- For each limit that is due: release as many held jobs as it has tokens and free
-- running slots (slots of jobs no longer running are dropped first: a safety net, since
-- every way out of 'active' frees its slot); look again later while jobs remain held.
-- Returns {jobs released, ms until the next limit is due (-1: none)}.

local now = now_ms()
local prefix = ARGV[1]
local base = ns_of(prefix)
local released = 0
for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 100)) do
    redis.call('ZREM', KEYS[1], name)
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
                if redis.call('HGET', prefix .. id, 'st') ~= 'active' then
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
            redis.call('ZADD', KEYS[1], 'LT', math.max(again, now + 1), name)
        end
    end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = -1
if first[2] then wait = math.max(0, tonumber(first[2]) - now) end
return {released, wait}
