-- Give a claimed job back to the front of its priority without spending an attempt.
-- KEYS[1] job record  KEYS[2] active index  KEYS[3] queued index  KEYS[4] wake list
-- ARGV[1] job id  ARGV[2] claim token
-- KEYS[5] events stream  ARGV[3] events stream length (0: off)  ARGV[4] queue name
-- ARGV[5] job record prefix
-- Returns 1 when released (or canceled, when a cancel was asked), 0 for a stale token.

local st, tok, pri, lim, cx = unpack(record(KEYS[1], 'st', 'tok', 'pri', 'lim',
    'cx'))
if st ~= 'active' or tok ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
if lim then limit_free(ns_of(ARGV[5]), ARGV[5], lim, ARGV[1]) end
-- A job someone asked to cancel is not put back: it ends canceled.
if cx then
    local now = now_ms()
    cancel_record(ns_of(ARGV[5]), ARGV[5], ARGV[1], ARGV[4], cx, now, KEYS[5], ARGV[3])
    after_final(ARGV[5], ARGV[1], 'canceled', now, KEYS[5], ARGV[3])
    return 1
end
redis.call('HINCRBY', KEYS[1], 'att', -1)
redis.call('HSET', KEYS[1], 'st', 'queued')
redis.call('ZADD', KEYS[3], queue_score(pri, 0), ARGV[1])
wake(KEYS[4], KEYS[3])
emit(KEYS[5], ARGV[3], 'e', 'released', 'id', ARGV[1], 'q', ARGV[4])
return 1
