-- Complete one job and claim the next in a single round trip (the worker's hot path).
-- KEYS[1..6] as complete.lua: job record, active index, completed index, result
--   waiters counter, result done list, events stream
-- KEYS[7..] as claim.lua: (queued, active, wake) per queue, then the paused set
-- ARGV[1..9] as complete.lua
-- ARGV[10] job record prefix  ARGV[11] new claim token  ARGV[12] lease in ms
-- ARGV[13] events stream length  ARGV[13+i] name of queue i
-- Returns {completed: 1 or 0, claimed job as claim.lua returns it or false}.

local now = now_ms()
local done = complete_job({KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]},
    {ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]}, now)
local claimed = claim_job(queue_list(7, #KEYS - 1, 13), KEYS[#KEYS], KEYS[6],
    ARGV[10], ARGV[11], ARGV[12], ARGV[13], now)
return {done, claimed or false}
