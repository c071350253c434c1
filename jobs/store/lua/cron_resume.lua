-- Resume a paused cron schedule. The ticks it missed while paused never fire: its state
-- records the moment of the resume, and firers fire only ticks after it. A claim left
-- unsent before the pause is still taken over. Returns 1 when it was paused, else 0.

local paused = KEYS[1]  -- the hash of paused schedules
local state = KEYS[2]   -- the schedule's state hash
local name = ARGV[1]    -- the schedule's name
local keep_ms = ARGV[2] -- how long the state hash is kept

if redis.call('HDEL', paused, name) == 0 then
    return 0
end
redis.call('HSET', state, 'resumed', math.floor(now_ms() / 1000))
redis.call('PEXPIRE', state, keep_ms)
return 1
