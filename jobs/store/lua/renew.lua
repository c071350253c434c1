-- Extend the leases of many claimed jobs in one round trip.
-- KEYS[2*(i-1)+1] record of job i, KEYS[2*(i-1)+2] its active index
-- ARGV[1] lease in ms, then for job i: ARGV[2*i] id, ARGV[2*i+1] claim token
-- Returns the positions (1-based) of jobs the token no longer holds.

local lease_end = now_ms() + tonumber(ARGV[1])
local lost = {}
for i = 1, #KEYS / 2 do
    local job, active = KEYS[2 * i - 1], KEYS[2 * i]
    local id, token = ARGV[2 * i], ARGV[2 * i + 1]
    local st, tok = unpack(record(job, 'st', 'tok'))
    if st == 'active' and tok == token then
        redis.call('ZADD', active, 'XX', lease_end, id)
    else
        lost[#lost + 1] = i
    end
end
return lost
