-- Record a failed attempt: retry later (scheduled) or dead, if the token holds the job.
-- KEYS[1] job record  KEYS[2] active index  KEYS[3] scheduled index  KEYS[4] dead index
-- KEYS[5] (unused: waiters are counted in the record)  KEYS[6] result done list  KEYS[7] promoter timers list
-- ARGV[1] job id  ARGV[2] claim token  ARGV[3] encoded list of every attempt's error
-- ARGV[4] retry delay ms, or -1 for dead  ARGV[5] 1: only if the lease has expired (reclaim)
-- ARGV[6] job record prefix  ARGV[7] dead TTL ms  ARGV[8] most dead jobs to keep
-- KEYS[8] events stream  KEYS[9] this minute's statistics hash  KEYS[10] totals hash
-- ARGV[9] events stream length (0: off)  ARGV[10] queue name  ARGV[11] function name
-- ARGV[12] duration ms  ARGV[13] duration bucket  ARGV[14] error summary
-- With an on_dead hook, enqueued in the same step as the death (so it runs exactly once):
-- ARGV[15] hook job id  ARGV[16] hook spec  ARGV[17] hook priority  ARGV[18] hook queue name
-- A job someone asked to cancel while it ran ends 'canceled' instead; a final outcome
-- releases or cancels the job's dependents and counts in its batch (after_final).
-- Returns 'scheduled', 'dead' or 'canceled' when written, 0 for a stale token or a live lease.

local st, tok, kids, batch, cx, lim = unpack(record(KEYS[1], 'st', 'tok', 'k', 'b',
    'cx', 'lim'))
if tok ~= ARGV[2] then return 0 end
-- A client retry of a write that already went through: report it, change nothing.
if (st == 'scheduled' or st == 'dead' or st == 'canceled') and ARGV[5] ~= '1' then return st end
if st ~= 'active' then return 0 end
local now = now_ms()
if ARGV[5] == '1' then
    local deadline = redis.call('ZSCORE', KEYS[2], ARGV[1])
    if deadline and tonumber(deadline) > now then return 0 end
end
redis.call('ZREM', KEYS[2], ARGV[1])
if lim then limit_free(ns_of(ARGV[6]), ARGV[6], lim, ARGV[1]) end
-- Someone asked to cancel this running job: whatever ended the attempt, it ends canceled.
if cx then
    redis.call('HSET', KEYS[1], 'errs', ARGV[3])
    cancel_record(ns_of(ARGV[6]), ARGV[6], ARGV[1], ARGV[10], cx, now, KEYS[8], ARGV[9])
    count(KEYS[9], KEYS[10], ARGV[10], ARGV[11], 'canceled', ARGV[12], ARGV[13])
    after_final(ARGV[6], ARGV[1], 'canceled', now, KEYS[8], ARGV[9])
    return 'canceled'
end
local delay = tonumber(ARGV[4])
if delay >= 0 then
    local due = now + delay
    redis.call('HSET', KEYS[1], 'st', 'scheduled', 'errs', ARGV[3], 'due', due)
    redis.call('ZADD', KEYS[3], due, ARGV[1])
    poke_timers(KEYS[3], KEYS[7], ARGV[1])
    count(KEYS[9], KEYS[10], ARGV[10], ARGV[11], 'retried', ARGV[12], ARGV[13])
    emit(KEYS[8], ARGV[9], 'e', 'retrying', 'id', ARGV[1], 'q', ARGV[10], 'in_ms', delay,
        'error', ARGV[14])
    return 'scheduled'
end
redis.call('HSET', KEYS[1], 'st', 'dead', 'errs', ARGV[3], 'tf', now)
redis.call('ZADD', KEYS[4], now, ARGV[1])
trim_index(KEYS[4], ARGV[6], 'dead', now - tonumber(ARGV[7]), tonumber(ARGV[8]))
notify(KEYS[1], KEYS[6])
count(KEYS[9], KEYS[10], ARGV[10], ARGV[11], 'dead', ARGV[12], ARGV[13])
emit(KEYS[8], ARGV[9], 'e', 'dead', 'id', ARGV[1], 'q', ARGV[10], 'error', ARGV[14])
if ARGV[15] then
    create_queued(ns_of(ARGV[6]), ARGV[6], ARGV[15], ARGV[16], ARGV[18], ARGV[17], now)
end
if kids or batch then after_final(ARGV[6], ARGV[1], 'dead', now, KEYS[8], ARGV[9]) end
return 'dead'
