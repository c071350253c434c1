-- The jobs a claim token took and still holds: the supervisor gives back what a worker
-- that died mid-claim took (rare: a scan of the queues' running jobs). A batch claim's
-- jobs carry the token with '+' .. i behind it (finish_batch.lua): they are found too.
-- Returns {job id, queue position i, its token, ...} (three values per job), maybe empty.
-- Keys built here: the records of the running jobs it looks at.

local first_queue_key = 1  -- KEYS[1..]: per queue: queued, active, wake_list
local prefix = ARGV[1]     -- job record prefix
local token = ARGV[2]      -- the claim token

local out = {}
for _, found in ipairs(claimed_with_all(KEYS, first_queue_key, prefix, token)) do
    local q, id = found[1], found[2]
    local st, tok = unpack(record(prefix .. id, 'st', 'tok'))
    if st == 'active' then
        out[#out + 1] = id
        out[#out + 1] = q
        out[#out + 1] = tok
    end
end
return out
