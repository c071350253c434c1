-- Record a failed attempt: retry later (scheduled) or dead, if the token holds the job.
-- A job someone asked to cancel while it ran ends 'canceled' instead; a final outcome
-- releases or cancels the job's dependents and counts in its batch (after_final).
-- Returns 'scheduled', 'dead' or 'canceled' when written, 0 for a stale token or a live lease.
-- Keys built here: records of dead jobs a trim drops, and what after_final and
-- limit_free build.

local job = KEYS[1]              -- the job's record
local active = KEYS[2]           -- the active index of its queue
local scheduled = KEYS[3]        -- its scheduled index
local dead = KEYS[4]             -- its dead index
local canceled = KEYS[5]         -- its canceled index
local done = KEYS[6]             -- the job's result done list
local timers = KEYS[7]           -- the promoter's timers list
local events = KEYS[8]           -- the events stream
local stats = KEYS[9]            -- this minute's statistics hash
local totals = KEYS[10]          -- the totals hash
local sequence = KEYS[11]        -- the sequence counter
local queues = KEYS[12]          -- the set of queue names
-- The jobs a death enqueues in the same step (so each runs exactly once): the job's
-- on_dead hook, and the job that runs its on_failure hook when no worker saw the death
-- (a kill, crash or lost worker): groups of none or more, in KEYS and in ARGV.
local first_hook_key = 13  -- KEYS[13..]: per hook: hook_job, hook_queued, hook_wake_list
local id = ARGV[1]               -- the job's id
local token = ARGV[2]            -- its claim token
local errors = ARGV[3]           -- encoded list of every attempt's error
local retry_ms = ARGV[4]         -- retry delay ms, or -1 for dead
local only_if_expired = ARGV[5]  -- '1': only if the lease has expired (reclaim)
local prefix = ARGV[6]           -- job record prefix
local dead_ttl_ms = ARGV[7]      -- how long dead jobs are kept
local max_dead = ARGV[8]         -- most dead jobs to keep
local events_len = ARGV[9]       -- events stream length (0: off)
local queue = ARGV[10]           -- the job's queue name
local fn = ARGV[11]              -- its function's name
local duration_ms = ARGV[12]     -- how long the attempt ran
local duration_bucket = ARGV[13] -- its duration bucket ('' when unknown)
local summary = ARGV[14]         -- error summary
local first_hook_arg = 15  -- ARGV[15..]: per hook: hook_id, hook_spec, hook_priority, hook_queue

local st, tok, kids, batch, cx, lim = unpack(record(job, 'st', 'tok', 'k', 'b', 'cx',
    'lim'))
if tok ~= token then return 0 end
-- A client retry of a write that already went through: report it, change nothing.
if (st == 'scheduled' or st == 'dead' or st == 'canceled') and only_if_expired ~= '1' then
    return st
end
if st ~= 'active' then return 0 end
local now = now_ms()
if only_if_expired == '1' then
    local deadline = redis.call('ZSCORE', active, id)
    if deadline and tonumber(deadline) > now then return 0 end
end
redis.call('ZREM', active, id)
if lim then limit_free(ns_of(prefix), prefix, lim, id) end
-- Someone asked to cancel this running job: whatever ended the attempt, it ends canceled.
if cx then
    redis.call('HSET', job, 'errs', errors)
    cancel_record(job, canceled, done, id, queue, cx, now, events, events_len)
    count(stats, totals, queue, fn, 'canceled', duration_ms, duration_bucket)
    after_final(prefix, id, 'canceled', now, events, events_len)
    return 'canceled'
end
local delay = tonumber(retry_ms)
if delay >= 0 then
    local due = now + delay
    redis.call('HSET', job, 'st', 'scheduled', 'errs', errors, 'due', due)
    redis.call('ZADD', scheduled, due, id)
    poke_timers(scheduled, timers, id)
    count(stats, totals, queue, fn, 'retried', duration_ms, duration_bucket)
    emit(events, events_len, 'e', 'retrying', 'id', id, 'q', queue, 'in_ms', delay, 'error',
        summary)
    return 'scheduled'
end
redis.call('HSET', job, 'st', 'dead', 'errs', errors, 'tf', now)
redis.call('ZADD', dead, now, id)
trim_index(dead, prefix, 'dead', now - tonumber(dead_ttl_ms), tonumber(max_dead))
notify(job, done)
count(stats, totals, queue, fn, 'dead', duration_ms, duration_bucket)
emit(events, events_len, 'e', 'dead', 'id', id, 'q', queue, 'error', summary)
for i = 0, (#KEYS - first_hook_key + 1) / 3 - 1 do
    local hook_job, hook_queued, hook_wake_list = unpack(KEYS, first_hook_key + 3 * i,
        first_hook_key + 3 * i + 2)
    local hook_id, hook_spec, hook_priority, hook_queue = unpack(ARGV, first_hook_arg + 4 * i,
        first_hook_arg + 4 * i + 3)
    create_queued(hook_job, hook_queued, hook_wake_list, sequence, queues, hook_id, hook_spec,
        hook_queue, hook_priority, now)
end
if kids or batch then after_final(prefix, id, 'dead', now, events, events_len) end
return 'dead'
