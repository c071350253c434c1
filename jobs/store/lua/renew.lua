-- Extend the leases of many claimed jobs in one round trip.
-- Returns the positions (1-based) of jobs the token no longer holds.

local first_job_key = 1  -- KEYS[1..]: per job: job, active
local lease_ms = ARGV[1] -- lease in ms
local first_job_arg = 2  -- ARGV[2..]: per job: id, token

local lease_end = now_ms() + tonumber(lease_ms)
local lost = {}
for i = 0, #KEYS / 2 - 1 do
    local job, active = KEYS[first_job_key + 2 * i], KEYS[first_job_key + 2 * i + 1]
    local id, token = ARGV[first_job_arg + 2 * i], ARGV[first_job_arg + 2 * i + 1]
    local st, tok = unpack(record(job, 'st', 'tok'))
    if st == 'active' and tok == token then
        redis.call('ZADD', active, 'XX', lease_end, id)
    else
        lost[#lost + 1] = i + 1
    end
end
return lost
