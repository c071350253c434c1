-- Publish the config.toml schedules one supervisor fires, so the CLI and the dashboard of
-- any host list them. An entry lasts 'ttl_ms' unless published again; the entries that
-- ran out (their supervisors stopped, or dropped them on reload) are removed here.

local definitions = KEYS[1] -- hash: name -> encoded schedule
local expiry = KEYS[2]      -- sorted set: name -> when its entry runs out (server ms)
local ttl_ms = ARGV[1]      -- how long these entries last
local first_schedule = 2    -- ARGV[2..]: per schedule: name, definition

local now = now_ms()
local until_ms = now + tonumber(ttl_ms)
for i = first_schedule, #ARGV, 2 do
    redis.call('HSET', definitions, ARGV[i], ARGV[i + 1])
    redis.call('ZADD', expiry, until_ms, ARGV[i])
end
local gone = redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'LIMIT', 0, 100)
if #gone > 0 then
    redis.call('HDEL', definitions, unpack(gone))
    redis.call('ZREM', expiry, unpack(gone))
end
return #gone
