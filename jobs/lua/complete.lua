-- Record a successful outcome, if the claim token still holds the job.
-- KEYS[1] job record  KEYS[2] active index  KEYS[3] completed index
-- KEYS[4] result waiters counter  KEYS[5] result done list
-- ARGV[1] job id  ARGV[2] claim token  ARGV[3] encoded result  ARGV[4] result TTL ms
-- ARGV[5] job record prefix  ARGV[6] most completed jobs to keep in the index
-- KEYS[6] events stream  KEYS[7] this minute's statistics hash  KEYS[8] totals hash
-- ARGV[7] events stream length (0: off)  ARGV[8] queue name  ARGV[9] function name
-- ARGV[10] duration ms  ARGV[11] duration histogram bucket
-- Returns 1 when written (or already written with this token), 0 for a stale token.

local st, tok = unpack(redis.call('HMGET', KEYS[1], 'st', 'tok'))
if tok ~= ARGV[2] then return 0 end
if st == 'completed' then return 1 end
if st ~= 'active' then return 0 end
local now = now_ms()
local ttl = tonumber(ARGV[4])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'st', 'completed', 'res', ARGV[3], 'tf', now)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[3], now + ttl, ARGV[1])
trim_index(KEYS[3], ARGV[5], 'completed', now, tonumber(ARGV[6]))
notify(KEYS[4], KEYS[5])
count(KEYS[7], KEYS[8], ARGV[8], ARGV[9], 'completed', ARGV[10], ARGV[11])
emit(KEYS[6], ARGV[7], 'e', 'completed', 'id', ARGV[1], 'q', ARGV[8], 'ms', ARGV[10])
return 1
