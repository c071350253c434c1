-- Sweep a queue's finished-jobs indexes (run by supervisors every few seconds).
-- Returns 1.
-- Keys built here: the records of the jobs a sweep drops.

local completed = KEYS[1]      -- the queue's completed index
local dead = KEYS[2]           -- its dead index
local canceled = KEYS[3]       -- its canceled index
local prefix = ARGV[1]         -- job record prefix
local dead_ttl_ms = ARGV[2]    -- how long dead and canceled jobs are kept
local max_completed = ARGV[3]  -- most completed jobs to keep
local max_dead = ARGV[4]       -- most dead (and canceled) jobs to keep

local now = now_ms()
trim_index(completed, prefix, 'completed', now, tonumber(max_completed))
trim_index(dead, prefix, 'dead', now - tonumber(dead_ttl_ms), tonumber(max_dead))
trim_index(canceled, prefix, 'canceled', now - tonumber(dead_ttl_ms), tonumber(max_dead))
return 1
