-- Mark a claimed cron tick's job as enqueued, so nobody sends it again.
-- KEYS[1] the schedule's state hash
-- ARGV[1] tick (epoch seconds)  ARGV[2] the tick's job id
-- Returns 1 when marked, 0 when the state has moved on to a later tick.

local state = redis.call('HMGET', KEYS[1], 'tick', 'job')
if state[1] == ARGV[1] and state[2] == ARGV[2] then
    redis.call('HSET', KEYS[1], 'sent', 1)
    return 1
end
return 0
