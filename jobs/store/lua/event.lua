-- Append one event from Python (worker started / stopped / killed and the like).
-- KEYS[1] events stream
-- ARGV[1] events stream length (0: off), then field, value pairs
-- Returns 1.

emit(KEYS[1], ARGV[1], unpack(ARGV, 2))
return 1
