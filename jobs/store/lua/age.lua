-- Starvation guard: raise the effective priority of queued jobs that waited too long.
-- KEYS[i] queued index of queue i
-- ARGV[1] job record prefix  ARGV[2] seconds-to-age in ms (a job gains ARGV[3] priority
-- points for each such period it has waited)  ARGV[3] priority step
-- ARGV[4] most jobs to look at per priority level and queue
-- A job keeps its sequence number, so it lands in the higher level ahead of the jobs
-- enqueued there after it; its record keeps its own priority.
-- Returns the number of jobs moved.

local now = now_ms()
local after, step, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local moved = 0
for _, queued in ipairs(KEYS) do
    -- Walk priority levels from the lowest one up; each level's oldest jobs come first.
    local last = redis.call('ZRANGE', queued, -1, -1, 'WITHSCORES')
    local band = last[2] and math.floor(tonumber(last[2]) / PRIORITY_BAND) or nil
    local levels = 0
    while band and band > 0 and levels < 1001 do
        levels = levels + 1
        local level_start = band * PRIORITY_BAND
        -- string.format, not '..': Lua prints numbers this large with too few digits.
        local ids = redis.call('ZRANGEBYSCORE', queued, level_start,
            string.format('(%d', level_start + PRIORITY_BAND), 'WITHSCORES', 'LIMIT', 0, limit)
        for i = 1, #ids, 2 do
            local id, score = ids[i], tonumber(ids[i + 1])
            local pri, te = unpack(record(ARGV[1] .. id, 'pri', 'te'))
            if not te then break end
            local periods = math.floor((now - tonumber(te)) / after)
            if periods < 1 then break end -- younger jobs follow: this level is done
            local effective = math.min(1000, tonumber(pri) + periods * step)
            local new_band = 1000 - effective
            if new_band < band then
                redis.call('ZADD', queued, new_band * PRIORITY_BAND + (score - level_start), id)
                moved = moved + 1
            end
        end
        local above = redis.call('ZREVRANGEBYSCORE', queued, string.format('(%d', level_start),
            '-inf',
            'WITHSCORES', 'LIMIT', 0, 1)
        band = above[2] and math.floor(tonumber(above[2]) / PRIORITY_BAND) or nil
    end
end
return moved
