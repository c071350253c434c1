-- Claim at most one job from the first non-empty queue, in the order given.
-- KEYS[3*(i-1)+1] queued index of queue i, KEYS[3*(i-1)+2] its active index,
-- KEYS[3*(i-1)+3] its wake list
-- ARGV[1] job record prefix  ARGV[2] claim token  ARGV[3] lease in ms
-- Returns nil when every queue is empty, else
--   {queue position i, id, spec, attempts (this one included), priority,
--    encoded errors or false, enqueued ms, now ms}

local now = now_ms()
for i = 1, #KEYS, 3 do
    while true do
        local popped = redis.call('ZPOPMIN', KEYS[i], 1)
        local id = popped[1]
        if not id then break end
        local job = ARGV[1] .. id
        -- An index entry without a record (deleted by hand) is dropped, not claimed.
        if redis.call('EXISTS', job) == 1 then
            local attempts = redis.call('HINCRBY', job, 'att', 1)
            redis.call('HSET', job, 'st', 'active', 'tok', ARGV[2], 'ts', now)
            redis.call('ZADD', KEYS[i + 1], now + tonumber(ARGV[3]), id)
            trim_wake(KEYS[i + 2], KEYS[i])
            local f = redis.call('HMGET', job, 'spec', 'pri', 'errs', 'te')
            return {(i + 2) / 3, id, f[1], attempts, f[2], f[3], f[4], now}
        end
    end
end
return nil
