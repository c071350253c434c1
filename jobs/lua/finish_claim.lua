-- Complete one job and claim the next in a single round trip (the worker's hot path).
-- Safe to resend: the completion is idempotent per token and the claim is remembered.
-- KEYS[1..6] as complete.lua: job record, active index, completed index, (unused),
--   result done list, events stream
-- KEYS[7] what the new claim token claimed  KEYS[8] the set of paused queue names
-- KEYS[9..] (queued, active, wake) per queue
-- ARGV[1..9] as complete.lua
-- ARGV[10] job record prefix  ARGV[11] new claim token  ARGV[12] lease in ms
-- ARGV[13] events stream length  ARGV[14] '1' when this call is a resend
-- ARGV[14+i] name of queue i
-- Returns {completed: 1 or 0, claimed job as claim.lua returns it or false}.

local now = now_ms()
local done, fresh = complete_job({KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]},
    {ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]}, now, true)
-- One stream entry for both events (a redis.call less per job): 'completed' rides along
-- in the 'started' entry as p.* fields, or is written alone when nothing is claimed.
local before = nil
if fresh then before = {'e', 'completed', 'id', ARGV[1], 'q', ARGV[8], 'ms', ARGV[9]} end
local claimed = claim_job(queue_list(9, #KEYS, 14), KEYS[8], KEYS[6], KEYS[7],
    ARGV[10], ARGV[11], ARGV[12], ARGV[13], now, ARGV[14], before)
return {done, claimed or false}
