-- Put a dead job back on its queue with a fresh set of attempts (errors are kept).
-- KEYS[1] job record  KEYS[2] dead index  KEYS[3] queued index  KEYS[4] wake list
-- KEYS[5] sequence counter
-- ARGV[1] job id  ARGV[2] queue name (must be the job's)
-- KEYS[6] events stream  ARGV[3] events stream length (0: off)
-- Returns 1 when requeued, -1 when the job is on another queue, else the job's state
-- (or false when there is no such job).

local st, pri, q = unpack(redis.call('HMGET', KEYS[1], 'st', 'pri', 'q'))
if not st then return false end
if q ~= ARGV[2] then return -1 end
if st ~= 'dead' then return st end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'st', 'queued', 'att', 0)
redis.call('HDEL', KEYS[1], 'tf', 'tok')
redis.call('ZADD', KEYS[3], queue_score(pri, redis.call('INCR', KEYS[5])), ARGV[1])
wake(KEYS[4], KEYS[3])
emit(KEYS[6], ARGV[3], 'e', 'requeued', 'id', ARGV[1], 'q', ARGV[2])
return 1
