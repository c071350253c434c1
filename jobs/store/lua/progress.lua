-- Record a running job's progress, if the claim token still holds it.
-- Returns 1 when written, 0 for a stale token.

local job = KEYS[1]         -- the job's record
local events = KEYS[2]      -- the events stream
local token = ARGV[1]       -- its claim token
local progress = ARGV[2]    -- the encoded progress
local events_len = ARGV[3]  -- events stream length (0: off)
local id = ARGV[4]          -- the job's id
local queue = ARGV[5]       -- its queue name
local done = ARGV[6]        -- how much is done
local total = ARGV[7]       -- out of how much ('' if unknown)
local message = ARGV[8]     -- what it is doing

local st, tok = unpack(record(job, 'st', 'tok'))
if st ~= 'active' or tok ~= token then return 0 end
redis.call('HSET', job, 'prog', progress)
emit(events, events_len, 'e', 'progress', 'id', id, 'q', queue, 'done', done, 'total', total,
    'msg', message)
return 1
