-- Claim at most one job from the first non-empty, unpaused queue, in the order given.
-- KEYS[3*(i-1)+1] queued index of queue i, KEYS[3*(i-1)+2] its active index,
-- KEYS[3*(i-1)+3] its wake list; KEYS[#KEYS-1] the set of paused queue names,
-- KEYS[#KEYS] the events stream
-- ARGV[1] job record prefix  ARGV[2] claim token  ARGV[3] lease in ms
-- ARGV[4] events stream length (0: off)  ARGV[4+i] name of queue i
-- Returns nil when every queue is empty or paused, else
--   {queue position i, id, spec, attempts (this one included), priority,
--    encoded errors or false, enqueued ms, now ms}

local now = now_ms()
local paused = KEYS[#KEYS - 1]
local events = KEYS[#KEYS]
local n = (#KEYS - 2) / 3
for q = 1, n do
    local i = 3 * (q - 1) + 1
    if redis.call('SISMEMBER', paused, ARGV[4 + q]) == 0 then
        while true do
            local popped = redis.call('ZPOPMIN', KEYS[i], 1)
            local id = popped[1]
            if not id then break end
            local job = ARGV[1] .. id
            local f = redis.call('HMGET', job, 'st', 'spec', 'pri', 'errs', 'te')
            -- An entry whose record is gone or not queued (deleted by hand) is dropped.
            if f[1] == 'queued' then
                local attempts = redis.call('HINCRBY', job, 'att', 1)
                redis.call('HSET', job, 'st', 'active', 'tok', ARGV[2], 'ts', now)
                redis.call('ZADD', KEYS[i + 1], now + tonumber(ARGV[3]), id)
                trim_wake(KEYS[i + 2], KEYS[i])
                -- A wake token of another queue may have brought this worker here: keep
                -- every other queue's tokens topped up so its own workers still wake.
                for o = 1, n do
                    if o ~= q then
                        local j = 3 * (o - 1) + 1
                        wake(KEYS[j + 2], KEYS[j])
                    end
                end
                emit(events, ARGV[4], 'e', 'started', 'id', id, 'q', ARGV[4 + q],
                    'att', attempts, 'w', ARGV[2])
                return {q, id, f[2], attempts, f[3], f[4], f[5], now}
            end
        end
    end
end
return nil
