-- Claim one tick of a cron schedule for firing: the one place a schedule's state moves.
-- KEYS[1] the schedule's state hash   KEYS[2] record of the tick's job
-- ARGV[1] tick (epoch seconds)  ARGV[2] the tick's job id
-- ARGV[3] claim lease in ms: a claim not marked sent after this may be taken over
-- ARGV[4] ms to keep the state hash  ARGV[5] id of the claiming firer
-- Returns 1 when the caller must enqueue the tick's job, else 0.
--
-- 'tick' only moves forward, so each tick is won by one firer. Asking again for a
-- claim it holds returns 1 (a resend after a lost reply). A claim whose firer stopped
-- before marking it sent is taken over after the lease, unless its job got in.

local tick = tonumber(ARGV[1])
local now = now_ms()
local last = tonumber(redis.call('HGET', KEYS[1], 'tick') or '-1')
if tick > last then
    redis.call('HSET', KEYS[1], 'tick', ARGV[1], 'job', ARGV[2], 'at', now, 'sent', 0,
        'by', ARGV[5])
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
    return 1
end
local state = redis.call('HMGET', KEYS[1], 'job', 'sent', 'at', 'by')
if tick < last or state[1] ~= ARGV[2] or state[2] ~= '0' then
    return 0
end
if state[4] == ARGV[5] then
    return 1
end
if now - tonumber(state[3] or '0') < tonumber(ARGV[3]) then
    return 0 -- its firer may still be enqueueing
end
if redis.call('EXISTS', KEYS[2]) == 1 then
    redis.call('HSET', KEYS[1], 'sent', 1) -- the job got in before its firer stopped
    return 0
end
redis.call('HSET', KEYS[1], 'at', now, 'by', ARGV[5])
return 1
