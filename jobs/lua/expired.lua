-- List claimed jobs whose lease has expired (read only; fail.lua re-checks each).
-- KEYS[i] active index of queue i
-- ARGV[1] job record prefix  ARGV[2] most jobs to return per queue
-- Returns a flat list: queue position, id, token, attempts, spec, errors (false if none).

local now = now_ms()
local out = {}
for i = 1, #KEYS do
    local ids = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
    for _, id in ipairs(ids) do
        local f = redis.call('HMGET', ARGV[1] .. id, 'tok', 'att', 'spec', 'errs')
        out[#out + 1] = i
        out[#out + 1] = id
        out[#out + 1] = f[1] or false
        out[#out + 1] = f[2] or '0'
        out[#out + 1] = f[3] or false
        out[#out + 1] = f[4] or false
    end
end
return out
