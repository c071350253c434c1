-- Cancel a job: at once when it has not started (waiting, scheduled or queued); when it
-- is running, record the request so the supervisor running it kills it and ends it
-- canceled (fail.lua reads the 'cx' field when the killed job is accounted).
-- Returns 1 when canceled, 'active' when a running job was asked to stop, else the job's
-- state (or false when there is no such job).
-- Keys built here: the held set of the limit that holds the job back (the record names
-- it), and what after_final builds.

local job = KEYS[1]              -- the job's record
local queued = KEYS[2]           -- the queued index of its queue
local scheduled = KEYS[3]        -- its scheduled index
local waiting = KEYS[4]          -- its waiting index
local canceled = KEYS[5]         -- its canceled index
local done = KEYS[6]             -- the job's result done list
local wake_list = KEYS[7]        -- the queue's wake list
local events = KEYS[8]           -- the events stream
local cancels = KEYS[9]          -- the set of running jobs asked to cancel
local held = KEYS[10]            -- per queue, how many queued jobs limits hold back
local id = ARGV[1]               -- the job's id
local reason = ARGV[2]           -- why it is canceled
local prefix = ARGV[3]           -- job record prefix
local canceled_ttl_ms = ARGV[4]  -- how long canceled jobs are kept
local max_canceled = ARGV[5]     -- most canceled jobs to keep
local events_len = ARGV[6]       -- events stream length (0: off)
local queue = ARGV[7]            -- the job's queue name

local st, hold = unpack(redis.call('HMGET', job, 'st', 'hold'))
if not st then return false end
if st == 'active' then
    redis.call('HSET', job, 'cx', reason)
    redis.call('SADD', cancels, id)
    emit(events, events_len, 'e', 'cancel_requested', 'id', id, 'q', queue, 'reason', reason)
    return 'active'
end
local index = ({queued = queued, scheduled = scheduled, waiting = waiting})[st]
if not index then return st end
-- A queued job a rate or concurrency limit holds back sits in that limit's held set.
if hold then
    index = ns_of(prefix) .. 'limit:' .. hold .. ':held'
    redis.call('HINCRBY', held, queue, -1)
end
local now = now_ms()
redis.call('ZREM', index, id)
if st == 'queued' then trim_wake(wake_list, queued) end
cancel_record(job, canceled, done, id, queue, reason, now, events, events_len)
trim_index(canceled, prefix, 'canceled', now - tonumber(canceled_ttl_ms), tonumber(max_canceled))
after_final(prefix, id, 'canceled', now, events, events_len)
return 1
