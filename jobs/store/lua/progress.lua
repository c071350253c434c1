-- Record a running job's progress, if the claim token still holds it.
-- KEYS[1] job record  KEYS[2] events stream
-- ARGV[1] claim token  ARGV[2] encoded progress  ARGV[3] events stream length (0: off)
-- ARGV[4] job id  ARGV[5] queue name  ARGV[6] done  ARGV[7] total ('' if unknown)
-- ARGV[8] message
-- Returns 1 when written, 0 for a stale token.

local st, tok = unpack(record(KEYS[1], 'st', 'tok'))
if st ~= 'active' or tok ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'prog', ARGV[2])
emit(KEYS[2], ARGV[3], 'e', 'progress', 'id', ARGV[4], 'q', ARGV[5], 'done', ARGV[6],
    'total', ARGV[7], 'msg', ARGV[8])
return 1
