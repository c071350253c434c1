-- Mark a claimed cron tick's job as enqueued, so nobody sends it again.
-- Returns 1 when marked, 0 when the state has moved on to a later tick.

local state = KEYS[1]   -- the schedule's state hash
local tick = ARGV[1]    -- the tick (epoch seconds)
local job_id = ARGV[2]  -- the tick's job id

local current_tick, current_job = unpack(redis.call('HMGET', state, 'tick', 'job'))
if current_tick == tick and current_job == job_id then
    redis.call('HSET', state, 'sent', 1)
    return 1
end
return 0
