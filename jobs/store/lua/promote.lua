-- Move due scheduled jobs to their queues, give limit-held jobs their turn, and say
-- when the next of either is due (one call per promoter pass).
-- KEYS[3*(i-1)+1] scheduled index of queue i, KEYS[3*(i-1)+2] its queued index,
-- KEYS[3*(i-1)+3] its wake list; KEYS[#KEYS-1] the sequence counter;
-- KEYS[#KEYS] the limits' due times
-- ARGV[1] job record prefix  ARGV[2] most jobs to move per queue
-- Returns {jobs moved, ms until the next due job or limit (0: more are due now, -1: none)}.

local now = now_ms()
local limit = tonumber(ARGV[2])
local released, next_due = release_due_limits(KEYS[#KEYS], ARGV[1], now)
local moved = released
local seq_key = KEYS[#KEYS - 1]
for i = 1, #KEYS - 2, 3 do
    local scheduled, queued, wake_key = KEYS[i], KEYS[i + 1], KEYS[i + 2]
    local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, limit)
    if #due > 0 then
        local seq = redis.call('INCRBY', seq_key, #due) - #due
        for j, id in ipairs(due) do
            local job = ARGV[1] .. id
            local pri, st = unpack(record(job, 'pri', 'st'))
            redis.call('ZREM', scheduled, id)
            if pri and st == 'scheduled' then
                redis.call('HSET', job, 'st', 'queued')
                redis.call('HDEL', job, 'due')
                redis.call('ZADD', queued, queue_score(pri, seq + j), id)
                wake(wake_key, queued)
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
