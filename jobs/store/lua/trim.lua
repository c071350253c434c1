-- Sweep a queue's finished-jobs indexes (run by supervisors every few seconds).
-- KEYS[1] completed index  KEYS[2] dead index  KEYS[3] canceled index
-- ARGV[1] job record prefix  ARGV[2] dead/canceled TTL ms  ARGV[3] most completed to keep
-- ARGV[4] most dead (and canceled) to keep
-- Returns 1.

local now = now_ms()
trim_index(KEYS[1], ARGV[1], 'completed', now, tonumber(ARGV[3]))
trim_index(KEYS[2], ARGV[1], 'dead', now - tonumber(ARGV[2]), tonumber(ARGV[4]))
trim_index(KEYS[3], ARGV[1], 'canceled', now - tonumber(ARGV[2]), tonumber(ARGV[4]))
return 1
