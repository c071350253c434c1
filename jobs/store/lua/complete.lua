-- Record a successful outcome, if the claim token still holds the job.
-- KEYS[1] job record  KEYS[2] active index  KEYS[3] completed index
-- KEYS[4] result done list  KEYS[5] events stream
-- ARGV[1] job id  ARGV[2] claim token  ARGV[3] encoded result  ARGV[4] result TTL ms
-- ARGV[5] job record prefix  ARGV[6] events stream length (0: off)  ARGV[7] queue name
-- ARGV[8] duration ms
-- Returns 1 when written, 2 when already written with this token (a resend), 0 for a
-- stale token.

local done, fresh = complete_job(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2],
    ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], now_ms(), false)
if done == 1 and not fresh then return 2 end
return done
