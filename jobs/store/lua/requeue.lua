-- Put a dead or canceled job back on its queue with a fresh set of attempts (errors are
-- kept). A batch member leaves its batch's dead or canceled count (its new outcome counts
-- when it comes; callbacks that already ran do not run again). Dependents canceled by its
-- end stay canceled.
-- Returns 1 when requeued, -1 when the job is on another queue, else the job's state
-- (or false when there is no such job).
-- Keys built here: the job's batch hash (the record names the batch).

local job = KEYS[1]         -- the job's record
local dead = KEYS[2]        -- the dead index of its queue
local canceled = KEYS[3]    -- the canceled index of its queue
local queued = KEYS[4]      -- its queued index
local wake_list = KEYS[5]   -- its wake list
local sequence = KEYS[6]    -- the sequence counter
local events = KEYS[7]      -- the events stream
local id = ARGV[1]          -- the job's id
local queue = ARGV[2]       -- the queue's name (must be the job's)
local events_len = ARGV[3]  -- events stream length (0: off)
local prefix = ARGV[4]      -- job record prefix
local states = ARGV[5]      -- the states it may be requeued from: dead, or dead,canceled

local st, pri, q, batch = unpack(redis.call('HMGET', job, 'st', 'pri', 'q', 'b'))
if not st then return false end
if q ~= queue then return -1 end
if not string.find(',' .. states .. ',', ',' .. st .. ',', 1, true) then return st end
local index = ({dead = dead, canceled = canceled})[st]
if not index then return st end
redis.call('ZREM', index, id)
redis.call('HSET', job, 'st', 'queued', 'att', 0)
redis.call('HDEL', job, 'tf', 'tok', 'why', 'cx')
if batch and redis.call('HGET', job, 'bs') == st then
    redis.call('HINCRBY', ns_of(prefix) .. 'batch:' .. batch, st, -1)
    redis.call('HDEL', job, 'bs')
end
redis.call('ZADD', queued, queue_score(pri, redis.call('INCR', sequence)), id)
wake(wake_list, queued)
emit(events, events_len, 'e', 'requeued', 'id', id, 'q', queue)
return 1
