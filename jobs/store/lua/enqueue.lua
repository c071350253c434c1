-- Enqueue a batch of jobs on one queue (a single job is a batch of one).
-- KEYS[1] queued index      KEYS[2] scheduled index   KEYS[3] wake list
-- KEYS[4] sequence counter  KEYS[5] set of queue names KEYS[6] promoter timers list
-- KEYS[7] completed index   KEYS[8] dead index         KEYS[9] canceled index
-- KEYS[10] events stream
-- ARGV[1] queue name  ARGV[2] number of jobs n  ARGV[3] events stream length (0: off)
-- ARGV[4] job record prefix (job i's record is prefix .. id)
-- ARGV[6] '0' when this call is sent for the first time (a job with a generated id then
--   cannot exist yet: its record is not looked up), '1' when it may be a resend
-- ARGV[5] the n jobs, packed back to back (one argument, not eight per job: parsing
--   thousands of arguments cost the server more than the enqueue itself), each as
--   struct '>Hc0Ic0iddBIc0Hc0':
--   id, encoded spec, priority, delay in ms (-1: none), absolute due ms (-1: none),
--   1 when the id was chosen by the caller (it may have been used before), else 0,
--   workflow options as JSON, or '' for none:
--     deps: parent ids (the job waits until they are final), opf: 'run' to run even
--     when a parent ends dead or canceled, pr: the parent whose result it receives,
--     b: batch id, uk/ut/uw: uniqueness key name, its window in ms, 1 to hold the key
--     for the whole window rather than until the job is final, ldef: the function's
--     limit definition (see limit_def), published so the limit holds from this job on,
--   the function name (for its rate and concurrency limits)
-- Returns, per job: 1 when created, the existing job's state when the id was taken, or
-- '=' .. id of the job already holding the uniqueness key. When a parent does not exist
-- nothing is written and the reply is {'missing', job id, parent id}.

local n = tonumber(ARGV[2])
local prefix = ARGV[4]
local maybe_resent = ARGV[6] ~= '0'
local base = ns_of(prefix)
local final = {completed = true, dead = true, canceled = true}
local NO_EXTRA = {}
local packed, pos = {}, 1
for i = 1, n do
    local job = {}
    job[1], job[2], job[3], job[4], job[5], job[6], job[7], job[8], pos =
        struct.unpack('>Hc0Ic0iddBIc0Hc0', ARGV[5], pos)
    packed[i] = job
end
local function arg(i, k) return packed[i][k + 1] end

-- Check every parent before writing anything: a parent must exist, or be created
-- earlier in this same call (a chain enqueued at once).
local extras = {}
local earlier = {}
for i = 1, n do
    if arg(i, 6) ~= '' then
        local ex = cjson.decode(arg(i, 6))
        extras[i] = ex
        for _, pid in ipairs(ex.deps or {}) do
            if not earlier[pid] and redis.call('EXISTS', prefix .. pid) == 0 then
                return {'missing', arg(i, 0), pid}
            end
        end
    end
    earlier[arg(i, 0)] = true
end

-- Limits are looked up only when any exist: plain queues pay one EXISTS per call.
local limits_key = base .. 'limits'
for i = 1, n do
    if extras[i] and extras[i].ldef then
        redis.call('HSET', limits_key, 'fn:' .. arg(i, 7), extras[i].ldef)
    end
end
local queue_limit = false
local has_limits = redis.call('EXISTS', limits_key) == 1
if has_limits then queue_limit = redis.call('HEXISTS', limits_key, 'q:' .. ARGV[1]) == 1 end

local now = now_ms()
local seq = redis.call('INCRBY', KEYS[4], n) - n
redis.call('SADD', KEYS[5], ARGV[1])
local out = {}
local woken = 0 -- jobs made runnable by this call: each may wake one blocked worker
for i = 1, n do
    local id, spec, pri = arg(i, 0), arg(i, 1), arg(i, 2)
    local delay, at = arg(i, 3), arg(i, 4)
    local ex = extras[i] or NO_EXTRA
    local job = prefix .. id
    -- Also for a generated id when the call may be a resend (its reply lost): it must
    -- find its own jobs.
    local existing = nil
    if maybe_resent or arg(i, 5) == 1 then existing = redis.call('HGET', job, 'st') end
    local holder = nil
    if not existing and ex.uk then
        holder = redis.call('GET', ex.uk)
        if holder then
            local held = redis.call('HGET', prefix .. holder, 'st')
            -- A holder whose record is gone (purged, expired) holds nothing any more.
            if not (held and (not final[held] or ex.uw)) then holder = nil end
        end
    end
    if existing then
        out[i] = existing
    elseif holder then
        out[i] = '=' .. holder
    else
        -- A reused custom id whose old record expired may linger in a finished index.
        if arg(i, 5) == 1 then
            redis.call('ZREM', KEYS[7], id)
            redis.call('ZREM', KEYS[8], id)
            redis.call('ZREM', KEYS[9], id)
        end
        local fields = {'spec', spec, 'q', ARGV[1], 'pri', pri, 'att', 0, 'te', now}
        local nf = #fields
        local function field(k, v) fields[nf + 1] = k; fields[nf + 2] = v; nf = nf + 2 end
        if ex.uk then redis.call('SET', ex.uk, id, 'PX', ex.ut) end
        if ex.b then field('b', ex.b) end
        if ex.opf then field('opf', ex.opf) end
        if ex.pr then field('pr', ex.pr) end
        if has_limits then
            local lim = {}
            if redis.call('HEXISTS', limits_key, 'fn:' .. arg(i, 7)) == 1 then
                lim[1] = 'fn:' .. arg(i, 7)
            end
            if queue_limit then lim[#lim + 1] = 'q:' .. ARGV[1] end
            if #lim > 0 then field('lim', table.concat(lim, '|')) end
        end
        local pending, failed = 0, nil
        for _, pid in ipairs(ex.deps or {}) do
            local pjob = prefix .. pid
            local pst = redis.call('HGET', pjob, 'st')
            if pst == 'completed' or (final[pst] and ex.opf == 'run') then
                if ex.pr == pid then
                    local res = MSGPACK_NIL
                    if pst == 'completed' then res = redis.call('HGET', pjob, 'res') end
                    field('pres', res or MSGPACK_NIL)
                end
            elseif final[pst] then
                failed = failed or ('parent ' .. pid .. ' ended ' .. pst)
            else
                pending = pending + 1
                redis.call('SADD', base .. 'kids:' .. pid, id)
                redis.call('HSET', pjob, 'k', 1)
            end
        end
        local due = -1
        if at >= 0 then due = at elseif delay > 0 then due = now + delay end
        if failed then
            redis.call('HSET', job, unpack(fields))
            cancel_record(base, prefix, id, ARGV[1], failed, now, KEYS[10], ARGV[3])
            if ex.b then after_final(prefix, id, 'canceled', now, KEYS[10], ARGV[3]) end
        elseif pending > 0 then
            field('st', 'waiting')
            field('deps', pending)
            if at >= 0 then field('at', at) end
            if delay > 0 then field('dly', delay) end
            redis.call('HSET', job, unpack(fields))
            redis.call('ZADD', qkey(base, ARGV[1], 'waiting'), now, id)
            if n == 1 then emit(KEYS[10], ARGV[3], 'e', 'waiting', 'id', id, 'q', ARGV[1]) end
        elseif due > now then
            field('st', 'scheduled')
            field('due', due)
            redis.call('HSET', job, unpack(fields))
            redis.call('ZADD', KEYS[2], due, id)
            poke_timers(KEYS[2], KEYS[6], id)
            if n == 1 then emit(KEYS[10], ARGV[3], 'e', 'scheduled', 'id', id, 'q', ARGV[1]) end
        else
            field('st', 'queued')
            redis.call('HSET', job, unpack(fields))
            redis.call('ZADD', KEYS[1], queue_score(pri, seq + i), id)
            woken = woken + 1
            if n == 1 then emit(KEYS[10], ARGV[3], 'e', 'enqueued', 'id', id, 'q', ARGV[1]) end
        end
        out[i] = 1
    end
end
-- About one wake token per queued job (as wake() keeps it), topped up once per call.
if woken > 0 then
    local tokens_left = redis.call('LLEN', KEYS[3])
    local missing = woken -- no token left: the queue holds at least the jobs just added
    if tokens_left > 0 then
        missing = math.min(woken, redis.call('ZCARD', KEYS[1]) - tokens_left)
    end
    if missing > 0 then
        local tokens = {}
        for t = 1, missing do tokens[t] = 1 end
        redis.call('RPUSH', KEYS[3], unpack(tokens))
    end
end
-- A bulk enqueue reports one event, not one per job.
if n > 1 then emit(KEYS[10], ARGV[3], 'e', 'bulk_enqueued', 'q', ARGV[1], 'n', n) end
return out
