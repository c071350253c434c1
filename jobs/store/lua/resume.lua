-- Resume a paused queue and wake workers for the jobs it holds.
-- Returns 1 when the queue was paused, else 0.

local paused = KEYS[1]     -- the set of paused queue names
local queued = KEYS[2]     -- the queue's queued index
local wake_list = KEYS[3]  -- its wake list
local queue = ARGV[1]      -- the queue's name

local was = redis.call('SREM', paused, queue)
local count_queued = redis.call('ZCARD', queued)
local have = redis.call('LLEN', wake_list)
local missing = math.min(count_queued, 1000) - have
if missing > 0 then
    local tokens = {}
    for i = 1, missing do tokens[i] = 1 end
    redis.call('RPUSH', wake_list, unpack(tokens))
end
return was
