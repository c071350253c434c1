-- Rewrite encrypted fields of one job's record (jobvisor encryption rotate): each field
-- takes its new value only if none of them changed since they were read, so a rotation
-- racing a worker's write never puts back an older value.
-- Returns 1 when written, 0 when a field changed meanwhile or the record is gone.

local job = KEYS[1]         -- the job's record
local first_field = 1       -- ARGV[1..]: per field: field, digest, value

if redis.call('EXISTS', job) == 0 then return 0 end
local writes = {}
for i = first_field, #ARGV, 3 do
    local field, digest, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    local now = redis.call('HGET', job, field)
    if not now or redis.sha1hex(now) ~= digest then return 0 end
    writes[#writes + 1] = field
    writes[#writes + 1] = value
end
redis.call('HSET', job, unpack(writes))
return 1
