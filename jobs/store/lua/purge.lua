-- Delete a job in a final state (completed, dead or canceled) for good: its record, its
-- place in its state's index, its log, its result done list and its dependents' set.
-- Returns 1 when deleted, -1 when the job is on another queue, else the job's state
-- (or false when there is no such job).

local job = KEYS[1]        -- the job's record
local completed = KEYS[2]  -- the completed index of its queue
local dead = KEYS[3]       -- the dead index of its queue
local canceled = KEYS[4]   -- the canceled index of its queue
local log = KEYS[5]        -- the job's log lines
local done = KEYS[6]       -- the job's result done list
local kids = KEYS[7]       -- the ids of jobs that waited on it
local id = ARGV[1]         -- the job's id
local queue = ARGV[2]      -- the queue's name (must be the job's)
local states = ARGV[3]     -- the states it may be deleted from, comma-separated

local st, q = unpack(redis.call('HMGET', job, 'st', 'q'))
if not st then return false end
if q ~= queue then return -1 end
if not string.find(',' .. states .. ',', ',' .. st .. ',', 1, true) then return st end
local index = ({completed = completed, dead = dead, canceled = canceled})[st]
if not index then return st end
redis.call('ZREM', index, id)
redis.call('DEL', job, log, done, kids)
return 1
