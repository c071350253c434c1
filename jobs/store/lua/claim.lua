-- Claim at most one job from the first non-empty, unpaused queue, in the order given.
-- KEYS[1] the set of paused queue names  KEYS[2] the events stream
-- KEYS[3*i] queued index of queue i, KEYS[3*i+1] its active index, KEYS[3*i+2] its
-- wake list (i from 1)
-- ARGV[1] job record prefix  ARGV[2] claim token  ARGV[3] lease in ms
-- ARGV[4] events stream length (0: off)  ARGV[5] '1' when this call is a resend
-- ARGV[5+i] name of queue i
-- Returns nil when every queue is empty or paused, else
--   {queue position i, id, spec, attempts (this one included), priority,
--    encoded errors or false, enqueued ms, now ms, parent's encoded result or false,
--    names of unreadable numeric fields (a damaged record) or false}

return claim_job(3, 5, KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], now_ms(), ARGV[5])
