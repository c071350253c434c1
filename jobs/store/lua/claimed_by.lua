-- The job a claim token took and still holds, if any: the supervisor gives back what a
-- worker that died mid-claim took (rare: a scan of the queues' running jobs).
-- Returns {job id, queue position i} or nil.
-- Keys built here: the records of the running jobs it looks at.

local first_queue_key = 1  -- KEYS[1..]: per queue: queued, active, wake_list
local prefix = ARGV[1]     -- job record prefix
local token = ARGV[2]      -- the claim token

local q, id = claimed_with(KEYS, first_queue_key, prefix, token)
if id and record(prefix .. id, 'st')[1] == 'active' then return {id, q} end
return nil
