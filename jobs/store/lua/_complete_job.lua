-- Completing: the operation of complete.lua and of finish_claim.lua.
-- Keys built here: what after_final and limit_free build.

-- The success path: record the result if the claim token still holds the job. Returns 1
-- when written (or already written with this token), 0 for a stale token; the second
-- result says it was written now. `quiet`: leave the 'completed' event to the caller
-- (finish_claim merges it with the next job's 'started' into one stream entry).
-- Positional arguments, not tables: on the hot path every table and every redis.call
-- is a measurable share of the script's cost.
local function complete_job(job, active, completed, done, events, id, token, result,
                            result_ttl_ms, prefix, events_len, queue, duration_ms, now, quiet)
    -- The waiter count lives in the record ('w') so that no extra command reads it.
    local st, tok, waiting, kids, batch, cx, lim = unpack(record(job, 'st', 'tok',
        'w', 'k', 'b', 'cx', 'lim'))
    if tok ~= token then return 0, false end
    if st == 'completed' then return 1, false end
    if st ~= 'active' then return 0, false end
    local ttl = tonumber(result_ttl_ms)
    redis.call('ZREM', active, id)
    redis.call('HSET', job, 'st', 'completed', 'res', result, 'tf', now)
    redis.call('PEXPIRE', job, ttl)
    redis.call('ZADD', completed, now + ttl, id)
    -- The completed index is bounded (count and age) by the supervisors' sweep
    -- (trim.lua, every few seconds); each record also expires on its own TTL.
    if waiting then notify(job, done, waiting) end
    if not quiet then emit(events, events_len, 'e', 'completed', 'id', id, 'q', queue,
        'ms', duration_ms) end
    if kids or batch or cx then after_final(prefix, id, 'completed', now, events, events_len) end
    if lim then limit_free(ns_of(prefix), prefix, lim, id) end
    return 1, true
end
