-- Append one event from Python (worker started / stopped / killed and the like).
-- Returns 1.

local events = KEYS[1]      -- the events stream
local events_len = ARGV[1]  -- events stream length (0: off)
local first_field = 2       -- ARGV[2..]: per field: field, value

emit(events, events_len, unpack(ARGV, first_field))
return 1
