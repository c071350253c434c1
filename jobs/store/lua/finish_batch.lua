-- Complete the jobs a worker ran since its last call and claim up to `want` jobs, in one
-- round trip (the hot path of a worker that claims short jobs in batches). Safe to
-- resend: each completion is idempotent per token, and a resent claim finds what the
-- first one took with each of its tokens.
-- Returns {per completion: 1 written now, 2 written before with its token (a resend) or
-- 0 for a stale token; the claimed jobs, each as claim.lua returns one}.
-- Keys built here: each completed job's record and result done list, its queue's
-- completed index, and what complete_job and claim_job build.

local paused = KEYS[1]      -- the set of paused queue names
local events = KEYS[2]      -- the events stream
local first_queue_key = 3   -- KEYS[3..]: per queue: queued, active, wake_list
local prefix = ARGV[1]      -- job record prefix
local token = ARGV[2]       -- the first claimed job's token; the i-th's is token .. '+' .. i
local lease_ms = ARGV[3]    -- the claimed jobs' lease in ms
local events_len = ARGV[4]  -- events stream length (0: off)
local resent = ARGV[5]      -- '1' when this call is a resend
local want = ARGV[6]        -- how many jobs to claim (0: none)
-- The completions packed back to back (one argument: see enqueue.lua), each as struct
-- '>Hc0Hc0Ic0ddH': id, claim token, encoded result, result TTL in ms, run time in ms, the
-- position of its queue among the queues below.
local done = ARGV[7]
local first_queue_name = 8  -- ARGV[8..]: per queue: name

local now = now_ms()
local base = ns_of(prefix)
local written = {}
local fresh = {}  -- completions written now, whose 'completed' event is still to go out
local pos = 1
while pos <= #done do
    local id, tok, result, ttl, ms, q
    id, tok, result, ttl, ms, q, pos = struct.unpack('>Hc0Hc0Ic0ddH', done, pos)
    local queue = ARGV[first_queue_name + q - 1]
    local ok, now_written = complete_job(prefix .. id, KEYS[first_queue_key + 3 * (q - 1) + 1],
        qkey(base, queue, 'completed'), base .. 'done:' .. id, events, id, tok, result, ttl,
        prefix, events_len, queue, ms, now, true)
    if now_written then
        written[#written + 1] = 1
        fresh[#fresh + 1] = {id, queue, ms}
    else
        written[#written + 1] = ok * 2
    end
end
-- Each 'completed' event rides along in a 'started' entry, as in finish_claim.lua (a
-- claim that finds nothing writes the one it was given alone).
local claimed = {}
local told = 0
for i = 1, tonumber(want) do
    local t = token
    if i > 1 then t = token .. '+' .. i end
    local f = fresh[i]
    local job
    if f then
        told = i
        job = claim_job(paused, events, KEYS, first_queue_key, ARGV, first_queue_name, prefix,
            t, lease_ms, events_len, now, resent, f[1], f[2], f[3])
    else
        job = claim_job(paused, events, KEYS, first_queue_key, ARGV, first_queue_name, prefix,
            t, lease_ms, events_len, now, resent)
    end
    if not job then break end
    claimed[#claimed + 1] = job
end
for i = told + 1, #fresh do
    local f = fresh[i]
    emit(events, events_len, 'e', 'completed', 'id', f[1], 'q', f[2], 'ms', f[3])
end
return {written, claimed}
