-- Delete a dead job for good.
-- KEYS[1] job record  KEYS[2] dead index
-- ARGV[1] job id
-- Returns 1 when deleted, else the job's state (or false when there is no such job).

local st = redis.call('HGET', KEYS[1], 'st')
if not st then return false end
if st ~= 'dead' then return st end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
return 1
