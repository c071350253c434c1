-- Put a dead job back on its queue with a fresh set of attempts (errors are kept).
-- KEYS[1] job record  KEYS[2] dead index  KEYS[3] queued index  KEYS[4] wake list
-- KEYS[5] sequence counter
-- ARGV[1] job id  ARGV[2] queue name (must be the job's)
-- KEYS[6] events stream  ARGV[3] events stream length (0: off)  ARGV[4] job record prefix
-- A batch member leaves its batch's dead count (its new outcome counts when it comes;
-- callbacks that already ran do not run again). Dependents canceled by its death stay
-- canceled.
-- Returns 1 when requeued, -1 when the job is on another queue, else the job's state
-- (or false when there is no such job).

local st, pri, q, batch = unpack(redis.call('HMGET', KEYS[1], 'st', 'pri', 'q', 'b'))
if not st then return false end
if q ~= ARGV[2] then return -1 end
if st ~= 'dead' then return st end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'st', 'queued', 'att', 0)
redis.call('HDEL', KEYS[1], 'tf', 'tok')
if batch and redis.call('HGET', KEYS[1], 'bs') == 'dead' then
    redis.call('HINCRBY', ns_of(ARGV[4]) .. 'batch:' .. batch, 'dead', -1)
    redis.call('HDEL', KEYS[1], 'bs')
end
redis.call('ZADD', KEYS[3], queue_score(pri, redis.call('INCR', KEYS[5])), ARGV[1])
wake(KEYS[4], KEYS[3])
emit(KEYS[6], ARGV[3], 'e', 'requeued', 'id', ARGV[1], 'q', ARGV[2])
return 1
