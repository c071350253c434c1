-- The job a claim token took and still holds, if any: the supervisor gives back what a
-- worker that died mid-claim took (rare: a scan of the queues' running jobs).
-- KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]: queued index, active index, wake list of queue i
-- ARGV[1] job record prefix  ARGV[2] claim token
-- Returns {job id, queue position i} or nil.

local q, id = claimed_with(1, ARGV[1], ARGV[2])
if id and record(ARGV[1] .. id, 'st')[1] == 'active' then return {id, q} end
return nil
