-- Complete one job and claim the next in a single round trip (the worker's hot path).
-- Safe to resend: the completion is idempotent per token and a resent claim finds what
-- the first one took. What changes per call comes first, what a worker sends every time
-- after it (the client packs that part once).
-- KEYS[1] job record  KEYS[2] its result done list
-- KEYS[3] active index of its queue  KEYS[4] completed index of its queue
-- KEYS[5] events stream  KEYS[6] the set of paused queue names
-- KEYS[7..] (queued, active, wake) per queue to claim from
-- ARGV[1] job id  ARGV[2] its claim token  ARGV[3] encoded result  ARGV[4] result TTL ms
-- ARGV[5] duration ms  ARGV[6] new claim token  ARGV[7] '1' when this call is a resend
-- ARGV[8] the job's queue name  ARGV[9] job record prefix  ARGV[10] events stream length
-- ARGV[11] lease in ms  ARGV[11+i] name of queue i
-- Returns {completed: 1 or 0, claimed job as claim.lua returns it or false}.

local now = now_ms()
local done, fresh = complete_job(KEYS[1], KEYS[3], KEYS[4], KEYS[2], KEYS[5], ARGV[1], ARGV[2],
    ARGV[3], ARGV[4], ARGV[9], ARGV[10], ARGV[8], ARGV[5], now, true)
-- One stream entry for both events (a redis.call less per job): 'completed' rides along
-- in the 'started' entry as p.* fields, or is written alone when nothing is claimed.
local done_id = nil
if fresh then done_id = ARGV[1] end
local claimed = claim_job(7, 11, KEYS[6], KEYS[5], ARGV[9], ARGV[6], ARGV[11], ARGV[10], now,
    ARGV[7], done_id, ARGV[8], ARGV[5])
return {done, claimed or false}
