-- Give jobs held back by rate and concurrency limits their turn (release_due_limits).
-- Returns {jobs released, ms until the next limit is due (-1: none)}.
-- Keys built here: what release_due_limits builds (_limits.lua).

local limits_due = KEYS[1]  -- the limits' due times (limit name -> ms when to look again)
local prefix = ARGV[1]      -- job record prefix

local released, wait = release_due_limits(limits_due, prefix, now_ms())
return {released, wait}
