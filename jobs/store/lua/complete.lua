-- Record a successful outcome, if the claim token still holds the job (complete_job).
-- Returns 1 when written, 2 when already written with this token (a resend), 0 for a
-- stale token.
-- Keys built here: what complete_job builds.

local job = KEYS[1]            -- the job's record
local active = KEYS[2]         -- the active index of its queue
local completed = KEYS[3]      -- the completed index of its queue
local done = KEYS[4]           -- its result done list
local events = KEYS[5]         -- the events stream
local id = ARGV[1]             -- the job's id
local token = ARGV[2]          -- its claim token
local result = ARGV[3]         -- its encoded result
local result_ttl_ms = ARGV[4]  -- how long the result is kept
local prefix = ARGV[5]         -- job record prefix
local events_len = ARGV[6]     -- events stream length (0: off)
local queue = ARGV[7]          -- the job's queue name
local duration_ms = ARGV[8]    -- how long it ran

local written, fresh = complete_job(job, active, completed, done, events, id, token, result,
    result_ttl_ms, prefix, events_len, queue, duration_ms, now_ms(), false)
if written == 1 and not fresh then return 2 end
return written
