-- Pause a cron schedule on every firer: the claim script refuses its ticks from this
-- moment, which is recorded (server ms) in the same step. Returns 1 when it was not
-- paused yet, else 0 (the first pause's moment stays).

local paused = KEYS[1] -- the hash of paused schedules
local name = ARGV[1]   -- the schedule's name

return redis.call('HSETNX', paused, name, now_ms())
