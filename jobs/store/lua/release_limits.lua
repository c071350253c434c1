-- Give jobs held back by rate and concurrency limits their turn (release_due_limits).
-- KEYS[1] the limits' due times (limit name -> ms when to look again)
-- ARGV[1] job record prefix
-- Returns {jobs released, ms until the next limit is due (-1: none)}.

local released, wait = release_due_limits(KEYS[1], ARGV[1], now_ms())
return {released, wait}
