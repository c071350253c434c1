-- Cancel a job: at once when it has not started (waiting, scheduled or queued); when it
-- is running, record the request so the supervisor running it kills it and ends it
-- canceled (fail.lua reads the 'cx' field when the killed job is accounted).
-- KEYS[1] job record  KEYS[2] queued index  KEYS[3] scheduled index
-- KEYS[4] waiting index  KEYS[5] canceled index
-- KEYS[6] (unused: waiters are counted in the record)  KEYS[7] result done list  KEYS[8] wake list
-- ARGV[1] job id  ARGV[2] reason  ARGV[3] job record prefix
-- ARGV[4] canceled TTL ms  ARGV[5] most canceled jobs to keep
-- KEYS[9] events stream  ARGV[6] events stream length (0: off)  ARGV[7] queue name
-- KEYS[10] the set of running jobs asked to cancel
-- Returns 1 when canceled, 'active' when a running job was asked to stop, else the job's
-- state (or false when there is no such job).

local st, hold = unpack(redis.call('HMGET', KEYS[1], 'st', 'hold'))
if not st then return false end
if st == 'active' then
    redis.call('HSET', KEYS[1], 'cx', ARGV[2])
    redis.call('SADD', KEYS[10], ARGV[1])
    emit(KEYS[9], ARGV[6], 'e', 'cancel_requested', 'id', ARGV[1], 'q', ARGV[7],
        'reason', ARGV[2])
    return 'active'
end
local index = ({queued = KEYS[2], scheduled = KEYS[3], waiting = KEYS[4]})[st]
if not index then return st end
-- A queued job a rate or concurrency limit holds back sits in that limit's held set.
if hold then
    index = ns_of(ARGV[3]) .. 'limit:' .. hold .. ':held'
    redis.call('HINCRBY', ns_of(ARGV[3]) .. 'held', ARGV[7], -1)
end
local now = now_ms()
redis.call('ZREM', index, ARGV[1])
if st == 'queued' then trim_wake(KEYS[8], KEYS[2]) end
cancel_record(ns_of(ARGV[3]), ARGV[3], ARGV[1], ARGV[7], ARGV[2], now, KEYS[9], ARGV[6])
trim_index(KEYS[5], ARGV[3], 'canceled', now - tonumber(ARGV[4]), tonumber(ARGV[5]))
after_final(ARGV[3], ARGV[1], 'canceled', now, KEYS[9], ARGV[6])
return 1
