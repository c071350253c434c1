-- Enqueue a batch of jobs on one queue (a single job is a batch of one).
-- KEYS[1] queued index      KEYS[2] scheduled index   KEYS[3] wake list
-- KEYS[4] sequence counter  KEYS[5] set of queue names KEYS[6] promoter timers list
-- KEYS[7] completed index   KEYS[8] dead index         KEYS[9] canceled index
-- KEYS[10] events stream
-- KEYS[10+i] record of job i
-- ARGV[1] queue name  ARGV[2] number of jobs n  ARGV[3] events stream length (0: off)
-- then for each job i, 6 values at ARGV[4 + 6*(i-1)]:
--   id, encoded spec, priority, delay in ms (-1: none), absolute due ms (-1: none),
--   1 when the id was chosen by the caller (it may have been used before), else 0
-- Returns, per job, 1 when created or the existing job's state when the id was taken.

local n = tonumber(ARGV[2])
local now = now_ms()
local seq = redis.call('INCRBY', KEYS[4], n) - n
redis.call('SADD', KEYS[5], ARGV[1])
local out = {}
for i = 1, n do
    local base = 4 + 6 * (i - 1)
    local id, spec, pri = ARGV[base], ARGV[base + 1], ARGV[base + 2]
    local delay, at = tonumber(ARGV[base + 3]), tonumber(ARGV[base + 4])
    local job = KEYS[10 + i]
    local existing = redis.call('HGET', job, 'st')
    if existing then
        out[i] = existing
    else
        -- A reused custom id whose old record expired may linger in a finished index.
        if ARGV[base + 5] == '1' then
            redis.call('ZREM', KEYS[7], id)
            redis.call('ZREM', KEYS[8], id)
            redis.call('ZREM', KEYS[9], id)
        end
        local due = -1
        if at >= 0 then due = at elseif delay > 0 then due = now + delay end
        if due > now then
            redis.call('HSET', job, 'spec', spec, 'q', ARGV[1], 'pri', pri, 'att', 0,
                'te', now, 'st', 'scheduled', 'due', due)
            redis.call('ZADD', KEYS[2], due, id)
            poke_timers(KEYS[2], KEYS[6], id)
            if n == 1 then emit(KEYS[10], ARGV[3], 'e', 'scheduled', 'id', id, 'q', ARGV[1]) end
        else
            redis.call('HSET', job, 'spec', spec, 'q', ARGV[1], 'pri', pri, 'att', 0,
                'te', now, 'st', 'queued')
            redis.call('ZADD', KEYS[1], queue_score(pri, seq + i), id)
            wake(KEYS[3], KEYS[1])
            if n == 1 then emit(KEYS[10], ARGV[3], 'e', 'enqueued', 'id', id, 'q', ARGV[1]) end
        end
        out[i] = 1
    end
end
-- A bulk enqueue reports one event, not one per job.
if n > 1 then emit(KEYS[10], ARGV[3], 'e', 'bulk_enqueued', 'q', ARGV[1], 'n', n) end
return out
