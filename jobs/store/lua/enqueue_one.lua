-- Enqueue one plain job: a generated id, no delay, no workflow options (dependencies,
-- uniqueness, batch, meta, trace context, named limits). What enqueue.lua does for such
-- a job, with none of its general machinery: about a quarter less of the server's work.
-- Returns 1 when created; when this call is a resend (its reply lost) and finds the job
-- its first send wrote, that job's state; 'limits' when the namespace has limits
-- defined, writing nothing (the caller then sends the job through enqueue.lua, which
-- applies them).

local job = KEYS[1]         -- the job's record
local queued = KEYS[2]      -- the queue's queued index
local wake_list = KEYS[3]   -- its wake list
local sequence = KEYS[4]    -- the sequence counter
local queues = KEYS[5]      -- the set of queue names
local events = KEYS[6]      -- the events stream
local limits = KEYS[7]      -- the limit definitions
local enqueued = KEYS[8]    -- jobs created, never reset: '<queue>|<function>' -> count
local queue = ARGV[1]       -- the queue's name
local id = ARGV[2]          -- the job's id
local spec = ARGV[3]        -- its encoded spec
local priority = ARGV[4]    -- its priority
local fn = ARGV[5]          -- its function's name
local events_len = ARGV[6]  -- events stream length (0: off)
local resent = ARGV[7]      -- '1' when this call may be a resend

if redis.call('EXISTS', limits) == 1 then return 'limits' end
if resent ~= '0' then
    local existing = redis.call('HGET', job, 'st')
    if existing then return existing end
end
redis.call('SADD', queues, queue)
redis.call('HSET', job, 'spec', spec, 'q', queue, 'pri', priority, 'att', 0, 'te', now_ms(),
    'st', 'queued')
redis.call('ZADD', queued, queue_score(priority, redis.call('INCR', sequence)), id)
emit(events, events_len, 'e', 'enqueued', 'id', id, 'q', queue)
redis.call('HINCRBY', enqueued, queue .. '|' .. fn, 1)
wake(wake_list, queued)
return 1
