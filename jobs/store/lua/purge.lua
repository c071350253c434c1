-- Delete a dead job for good.
-- Returns 1 when deleted, -1 when the job is on another queue, else the job's state
-- (or false when there is no such job).

local job = KEYS[1]    -- the job's record
local dead = KEYS[2]   -- the dead index of its queue
local id = ARGV[1]     -- the job's id
local queue = ARGV[2]  -- the queue's name (must be the job's)

local st, q = unpack(redis.call('HMGET', job, 'st', 'q'))
if not st then return false end
if q ~= queue then return -1 end
if st ~= 'dead' then return st end
redis.call('ZREM', dead, id)
redis.call('DEL', job)
return 1
