-- List claimed jobs whose lease has expired (fail.lua re-checks each); entries
-- whose record is gone are dropped so they cannot block the listing.
-- Returns a flat list: queue position, id, token, attempts, spec, errors (false if none).
-- Keys built here: the records of the jobs whose lease has expired.

local first_queue_key = 1  -- KEYS[1..]: per queue: active
local prefix = ARGV[1]     -- job record prefix
local most = ARGV[2]       -- most jobs to return per queue

local now = now_ms()
local out = {}
for at = first_queue_key, #KEYS do
    local active = KEYS[at]
    local ids = redis.call('ZRANGEBYSCORE', active, '-inf', now, 'LIMIT', 0, tonumber(most))
    for _, id in ipairs(ids) do
        local tok, att, spec, errs = unpack(record(prefix .. id, 'tok', 'att', 'spec', 'errs'))
        if not spec and not tok then
            redis.call('ZREM', active, id)
        else
            out[#out + 1] = at - first_queue_key + 1
            out[#out + 1] = id
            out[#out + 1] = tok or false
            out[#out + 1] = att or '0'
            out[#out + 1] = spec or false
            out[#out + 1] = errs or false
        end
    end
end
return out
