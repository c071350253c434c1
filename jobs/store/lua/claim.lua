-- Claim at most one job from the first non-empty, unpaused queue, in the order given
-- (claim_job, in _claim_job.lua).
-- Returns nil when every queue is empty or paused, else
--   {queue position i, id, spec, attempts (this one included), priority,
--    encoded errors or false, enqueued ms, now ms, parent's encoded result or false,
--    names of unreadable numeric fields (a damaged record) or false}
-- Keys built here: what claim_job builds.

local paused = KEYS[1]      -- the set of paused queue names
local events = KEYS[2]      -- the events stream
local first_queue_key = 3   -- KEYS[3..]: per queue: queued, active, wake_list
local prefix = ARGV[1]      -- job record prefix
local token = ARGV[2]       -- claim token
local lease_ms = ARGV[3]    -- lease in ms
local events_len = ARGV[4]  -- events stream length (0: off)
local resent = ARGV[5]      -- '1' when this call is a resend
local first_queue_name = 6  -- ARGV[6..]: per queue: name

return claim_job(paused, events, KEYS, first_queue_key, ARGV, first_queue_name, prefix, token,
    lease_ms, events_len, now_ms(), resent)
