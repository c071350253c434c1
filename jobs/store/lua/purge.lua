-- Delete a dead job for good.
-- KEYS[1] job record  KEYS[2] dead index
-- ARGV[1] job id  ARGV[2] queue name (must be the job's)
-- Returns 1 when deleted, -1 when the job is on another queue, else the job's state
-- (or false when there is no such job).

local st, q = unpack(redis.call('HMGET', KEYS[1], 'st', 'q'))
if not st then return false end
if q ~= ARGV[2] then return -1 end
if st ~= 'dead' then return st end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
return 1
