-- Record a successful outcome, if the claim token still holds the job.
-- KEYS[1] job record  KEYS[2] active index  KEYS[3] completed index
-- KEYS[4] result waiters counter  KEYS[5] result done list
-- ARGV[1] job id  ARGV[2] claim token  ARGV[3] encoded result  ARGV[4] result TTL ms
-- ARGV[5] job record prefix  ARGV[6] most completed jobs to keep in the index
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
return 1
