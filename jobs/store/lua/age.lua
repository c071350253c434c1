-- Starvation guard: raise the effective priority of queued jobs that waited too long.
-- A job gains `step` priority points for each `age_ms` it has waited. It keeps its
-- sequence number, so it lands in the higher level ahead of the jobs enqueued there after
-- it; its record keeps its own priority.
-- Returns the number of jobs moved.
-- Keys built here: the records of the jobs it looks at.

local first_queue_key = 1  -- KEYS[1..]: per queue: queued
local prefix = ARGV[1]     -- job record prefix
local age_ms = ARGV[2]     -- how long a job waits to gain `step` points
local step = ARGV[3]       -- priority points gained per `age_ms`
local most = ARGV[4]       -- most jobs to look at per priority level and queue

local now = now_ms()
local after, points, limit = tonumber(age_ms), tonumber(step), tonumber(most)
local moved = 0
for at = first_queue_key, #KEYS do
    local queued = KEYS[at]
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
            local pri, te = unpack(record(prefix .. id, 'pri', 'te'))
            if not te then break end
            local periods = math.floor((now - tonumber(te)) / after)
            if periods < 1 then break end -- younger jobs follow: this level is done
            local effective = math.min(1000, tonumber(pri) + periods * points)
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
