-- Record a failed attempt: retry later (scheduled) or dead, if the token holds the job.
-- KEYS[1] job record  KEYS[2] active index  KEYS[3] scheduled index  KEYS[4] dead index
-- KEYS[5] result waiters counter  KEYS[6] result done list  KEYS[7] promoter timers list
-- ARGV[1] job id  ARGV[2] claim token  ARGV[3] encoded list of every attempt's error
-- ARGV[4] retry delay ms, or -1 for dead  ARGV[5] 1: only if the lease has expired (reclaim)
-- ARGV[6] job record prefix  ARGV[7] dead TTL ms  ARGV[8] most dead jobs to keep
-- With an on_dead hook, enqueued in the same step as the death (so it runs exactly once):
-- KEYS[8] hook job record  KEYS[9] hook queue's queued index  KEYS[10] its wake list
-- KEYS[11] sequence counter  KEYS[12] set of queue names
-- ARGV[9] hook job id  ARGV[10] hook spec  ARGV[11] hook priority  ARGV[12] hook queue name
-- Returns 'scheduled' or 'dead' when written, 0 for a stale token or a live lease.

local st, tok = unpack(redis.call('HMGET', KEYS[1], 'st', 'tok'))
if tok ~= ARGV[2] then return 0 end
-- A client retry of a write that already went through: report it, change nothing.
if (st == 'scheduled' or st == 'dead') and ARGV[5] ~= '1' then return st end
if st ~= 'active' then return 0 end
local now = now_ms()
if ARGV[5] == '1' then
    local deadline = redis.call('ZSCORE', KEYS[2], ARGV[1])
    if deadline and tonumber(deadline) > now then return 0 end
end
redis.call('ZREM', KEYS[2], ARGV[1])
local delay = tonumber(ARGV[4])
if delay >= 0 then
    local due = now + delay
    redis.call('HSET', KEYS[1], 'st', 'scheduled', 'errs', ARGV[3], 'due', due)
    redis.call('ZADD', KEYS[3], due, ARGV[1])
    poke_timers(KEYS[3], KEYS[7], ARGV[1])
    return 'scheduled'
end
redis.call('HSET', KEYS[1], 'st', 'dead', 'errs', ARGV[3], 'tf', now)
redis.call('ZADD', KEYS[4], now, ARGV[1])
trim_index(KEYS[4], ARGV[6], 'dead', now - tonumber(ARGV[7]), tonumber(ARGV[8]))
notify(KEYS[5], KEYS[6])
if KEYS[8] and redis.call('EXISTS', KEYS[8]) == 0 then
    redis.call('SADD', KEYS[12], ARGV[12])
    redis.call('HSET', KEYS[8], 'spec', ARGV[10], 'q', ARGV[12], 'pri', ARGV[11], 'att', 0,
        'te', now, 'st', 'queued')
    redis.call('ZADD', KEYS[9], queue_score(ARGV[11], redis.call('INCR', KEYS[11])), ARGV[9])
    wake(KEYS[10], KEYS[9])
end
return 'dead'
