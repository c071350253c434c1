-- Move due scheduled jobs to their queues, and say when the next one is due.
-- KEYS[3*(i-1)+1] scheduled index of queue i, KEYS[3*(i-1)+2] its queued index,
-- KEYS[3*(i-1)+3] its wake list; KEYS[#KEYS] the sequence counter
-- ARGV[1] job record prefix  ARGV[2] most jobs to move per queue
-- Returns {jobs moved, ms until the next due job (0: more are due now, -1: none)}.

local now = now_ms()
local limit = tonumber(ARGV[2])
local moved = 0
local next_due = -1
local seq_key = KEYS[#KEYS]
for i = 1, #KEYS - 1, 3 do
    local scheduled, queued, wake_key = KEYS[i], KEYS[i + 1], KEYS[i + 2]
    local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, limit)
    if #due > 0 then
        local seq = redis.call('INCRBY', seq_key, #due) - #due
        for j, id in ipairs(due) do
            local job = ARGV[1] .. id
            local pri = redis.call('HGET', job, 'pri')
            redis.call('ZREM', scheduled, id)
            if pri and redis.call('HGET', job, 'st') == 'scheduled' then
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
