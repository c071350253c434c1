-- Move due scheduled jobs to their queues, give limit-held jobs their turn, and say
-- when the next of either is due (one call per promoter pass).
-- Returns {jobs moved, ms until the next due job or limit (0: more are due now, -1: none)}.
-- Keys built here: the records of the due jobs, and what release_due_limits builds.

local sequence = KEYS[1]    -- the sequence counter
local limits_due = KEYS[2]  -- the limits' due times
local first_queue_key = 3   -- KEYS[3..]: per queue: scheduled, queued, wake_list
local prefix = ARGV[1]      -- job record prefix
local most = ARGV[2]        -- most jobs to move per queue

local now = now_ms()
local limit = tonumber(most)
local released, next_due = release_due_limits(limits_due, prefix, now)
local moved = released
for at = first_queue_key, #KEYS, 3 do
    local scheduled, queued, wake_list = KEYS[at], KEYS[at + 1], KEYS[at + 2]
    local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, limit)
    if #due > 0 then
        local seq = redis.call('INCRBY', sequence, #due) - #due
        for j, id in ipairs(due) do
            local job = prefix .. id
            local pri, st = unpack(record(job, 'pri', 'st'))
            redis.call('ZREM', scheduled, id)
            if pri and st == 'scheduled' then
                redis.call('HSET', job, 'st', 'queued')
                redis.call('HDEL', job, 'due')
                redis.call('ZADD', queued, queue_score(pri, seq + j), id)
                wake(wake_list, queued)
                moved = moved + 1
            end
        end
    end
    local first = redis.call('ZRANGE', scheduled, 0, 0, 'WITHSCORES')
    if first[2] then
        local wait = tonumber(first[2]) - now
        if wait < 0 then wait = 0 end
        if next_due < 0 or wait < next_due then next_due = wait end
    end
end
return {moved, next_due}
