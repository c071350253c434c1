-- Resume a paused queue and wake workers for the jobs it holds.
-- KEYS[1] set of paused queue names  KEYS[2] queued index  KEYS[3] wake list
-- ARGV[1] queue name
-- Returns 1 when the queue was paused, else 0.

local was = redis.call('SREM', KEYS[1], ARGV[1])
local queued = redis.call('ZCARD', KEYS[2])
local have = redis.call('LLEN', KEYS[3])
local missing = math.min(queued, 1000) - have
if missing > 0 then
    local tokens = {}
    for i = 1, missing do tokens[i] = 1 end
    redis.call('RPUSH', KEYS[3], unpack(tokens))
end
return was
