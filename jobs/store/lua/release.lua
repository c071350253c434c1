-- Give a claimed job back to its place in the queue without spending an attempt.
-- Returns 1 when released (or canceled, when a cancel was asked), 0 for a stale token.
-- Keys built here: what after_final and limit_free build.

local job = KEYS[1]         -- the job's record
local active = KEYS[2]      -- the active index of its queue
local queued = KEYS[3]      -- its queued index
local wake_list = KEYS[4]   -- its wake list
local events = KEYS[5]      -- the events stream
local canceled = KEYS[6]    -- the queue's canceled index
local done = KEYS[7]        -- the job's result done list
local id = ARGV[1]          -- the job's id
local token = ARGV[2]       -- its claim token
local events_len = ARGV[3]  -- events stream length (0: off)
local queue = ARGV[4]       -- the job's queue name
local prefix = ARGV[5]      -- job record prefix

local st, tok, pri, lim, cx, qs = unpack(record(job, 'st', 'tok', 'pri', 'lim', 'cx', 'qs'))
if st ~= 'active' or tok ~= token then return 0 end
redis.call('ZREM', active, id)
if lim then limit_free(ns_of(prefix), prefix, lim, id) end
-- A job someone asked to cancel is not put back: it ends canceled.
if cx then
    local now = now_ms()
    cancel_record(job, canceled, done, id, queue, cx, now, events, events_len)
    after_final(prefix, id, 'canceled', now, events, events_len)
    return 1
end
redis.call('HINCRBY', job, 'att', -1)
redis.call('HSET', job, 'st', 'queued')
-- Its place when it was claimed (so jobs given back together keep their order), else
-- the front of its priority.
redis.call('ZADD', queued, tonumber(qs) or queue_score(pri, 0), id)
wake(wake_list, queued)
emit(events, events_len, 'e', 'released', 'id', id, 'q', queue)
return 1
