-- Register a result waiter unless the job is already final.
-- KEYS[1] job record  KEYS[2] (unused: waiters are counted in the record)
-- ARGV[1] waiter registration TTL ms
-- Returns the job's state (false when there is no such job); registers only when not final.

local st = redis.call('HGET', KEYS[1], 'st')
if not st then return false end
if st == 'completed' or st == 'dead' or st == 'canceled' then return st end
redis.call('HINCRBY', KEYS[1], 'w', 1)
return st
