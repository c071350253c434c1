-- Claim one tick of a cron schedule for firing: the one place a schedule's state moves.
-- Returns 1 when the caller must enqueue the tick's job, else 0.
--
-- 'tick' only moves forward, so each tick is won by one firer. Asking again for a
-- claim it holds returns 1 (a resend after a lost reply). A claim whose firer stopped
-- before marking it sent is taken over after the lease, unless its job got in. Nothing
-- is claimed while the schedule is paused, even by a firer that read it before the pause.

local state = KEYS[1]    -- the schedule's state hash
local job = KEYS[2]      -- the record of the tick's job
local paused = KEYS[3]   -- the hash of paused schedules
local tick = ARGV[1]     -- the tick (epoch seconds)
local job_id = ARGV[2]   -- the tick's job id
local lease_ms = ARGV[3] -- a claim not marked sent after this may be taken over
local keep_ms = ARGV[4]  -- how long the state hash is kept
local firer = ARGV[5]    -- id of the claiming firer
local name = ARGV[6]     -- the schedule's name

if redis.call('HEXISTS', paused, name) == 1 then
    return 0
end
local tick_s = tonumber(tick)
local now = now_ms()
local last = tonumber(redis.call('HGET', state, 'tick') or '-1')
if tick_s > last then
    redis.call('HSET', state, 'tick', tick, 'job', job_id, 'at', now, 'sent', 0, 'by', firer)
    redis.call('PEXPIRE', state, keep_ms)
    return 1
end
local claimed, sent, at, by = unpack(redis.call('HMGET', state, 'job', 'sent', 'at', 'by'))
if tick_s < last or claimed ~= job_id or sent ~= '0' then
    return 0
end
if by == firer then
    return 1
end
if now - tonumber(at or '0') < tonumber(lease_ms) then
    return 0 -- its firer may still be enqueueing
end
if redis.call('EXISTS', job) == 1 then
    redis.call('HSET', state, 'sent', 1) -- the job got in before its firer stopped
    return 0
end
redis.call('HSET', state, 'at', now, 'by', firer)
return 1
