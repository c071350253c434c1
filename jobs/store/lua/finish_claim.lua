-- Complete one job and claim the next in a single round trip (the worker's hot path):
-- complete_job, then claim_job. Safe to resend: the completion is idempotent per token
-- and a resent claim finds what the first one took. What changes per call comes first,
-- what a worker sends every time after it (the client packs that part once).
-- Returns {completed: 1 or 0, the claimed job as claim.lua returns it, or false}.
-- Keys built here: what complete_job and claim_job build.

local job = KEYS[1]            -- the finished job's record
local done = KEYS[2]           -- its result done list
local active = KEYS[3]         -- the active index of its queue
local completed = KEYS[4]      -- the completed index of its queue
local events = KEYS[5]         -- the events stream
local paused = KEYS[6]         -- the set of paused queue names
local first_queue_key = 7      -- KEYS[7..]: per queue: queued, active, wake_list
local id = ARGV[1]             -- the finished job's id
local token = ARGV[2]          -- its claim token
local result = ARGV[3]         -- its encoded result
local result_ttl_ms = ARGV[4]  -- how long the result is kept
local duration_ms = ARGV[5]    -- how long it ran
local new_token = ARGV[6]      -- the claim token of the next job
local resent = ARGV[7]         -- '1' when this call is a resend
local queue = ARGV[8]          -- the finished job's queue name
local prefix = ARGV[9]         -- job record prefix
local events_len = ARGV[10]    -- events stream length (0: off)
local lease_ms = ARGV[11]      -- the next job's lease in ms
local first_queue_name = 12    -- ARGV[12..]: per queue: name

local now = now_ms()
local written, fresh = complete_job(job, active, completed, done, events, id, token, result,
    result_ttl_ms, prefix, events_len, queue, duration_ms, now, true)
-- One stream entry for both events (a redis.call less per job): 'completed' rides along
-- in the 'started' entry as p.* fields, or is written alone when nothing is claimed.
local done_id = nil
if fresh then done_id = id end
local claimed = claim_job(paused, events, KEYS, first_queue_key, ARGV, first_queue_name, prefix,
    new_token, lease_ms, events_len, now, resent, done_id, queue, duration_ms)
return {written, claimed or false}
