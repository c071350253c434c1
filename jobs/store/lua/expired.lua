-- List claimed jobs whose lease has expired (fail.lua re-checks each); entries
-- whose record is gone are dropped so they cannot block the listing.
-- KEYS[i] active index of queue i
-- ARGV[1] job record prefix  ARGV[2] most jobs to return per queue
-- Returns a flat list: queue position, id, token, attempts, spec, errors (false if none).

local now = now_ms()
local out = {}
for i = 1, #KEYS do
    local ids = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
    for _, id in ipairs(ids) do
        local f = record(ARGV[1] .. id, 'tok', 'att', 'spec', 'errs')
        if not f[3] and not f[1] then
            redis.call('ZREM', KEYS[i], id)
        else
            out[#out + 1] = i
            out[#out + 1] = id
            out[#out + 1] = f[1] or false
            out[#out + 1] = f[2] or '0'
            out[#out + 1] = f[3] or false
            out[#out + 1] = f[4] or false
        end
    end
end
return out
