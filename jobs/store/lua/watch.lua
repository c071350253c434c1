-- Register a result waiter unless the job is already final: waiters are counted in the
-- record's 'w' field, and told through its result done list (notify).
-- Returns the job's state (false when there is no such job).

local job = KEYS[1]  -- the job's record

local st = redis.call('HGET', job, 'st')
if not st then return false end
if st == 'completed' or st == 'dead' or st == 'canceled' then return st end
redis.call('HINCRBY', job, 'w', 1)
return st
