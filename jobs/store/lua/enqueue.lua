-- Enqueue a batch of jobs on one queue (a single job is a batch of one).
-- Returns, per job: 1 when created, the existing job's state when the id was taken, or
-- '=' .. id of the job already holding the uniqueness key. When a parent does not exist
-- nothing is written and the reply is {'missing', job id, parent id}; when a job names a
-- limit that is not defined, nothing but the functions' limits is written and the reply
-- is {'nolimit', job id, limit name}.
--
-- Keys built here: the jobs' records and result done lists, their parents' records and
-- `kids:` sets, from the ids in `jobs` (one argument for n jobs: n keys would cost the
-- server more than the enqueue); a job's uniqueness key comes built, in its options.

local queued = KEYS[1]      -- the queue's queued index
local scheduled = KEYS[2]   -- its scheduled index
local wake_list = KEYS[3]   -- its wake list
local sequence = KEYS[4]    -- the sequence counter
local queues = KEYS[5]      -- the set of queue names
local timers = KEYS[6]      -- the promoter's timers list
local completed = KEYS[7]   -- the queue's completed index
local dead = KEYS[8]        -- its dead index
local canceled = KEYS[9]    -- its canceled index
local events = KEYS[10]     -- the events stream
local waiting = KEYS[11]    -- the queue's waiting index
local limits = KEYS[12]     -- the limit definitions
local enqueued = KEYS[13]   -- jobs created, never reset: '<queue>|<function>' -> count
local queue = ARGV[1]       -- the queue's name
local job_count = ARGV[2]   -- number of jobs n
local events_len = ARGV[3]  -- events stream length (0: off)
local prefix = ARGV[4]      -- job record prefix (job i's record is prefix .. id)
-- The n jobs, packed back to back (one argument, not eight per job: parsing thousands
-- of arguments cost the server more than the enqueue itself), each as struct
-- '>Hc0Ic0iddBIc0Hc0': id, encoded spec, priority, delay in ms (-1: none), absolute due
-- ms (-1: none), 1 when the id was chosen by the caller (it may have been used before)
-- else 0, workflow options as JSON or '' for none, the function name (for its rate and
-- concurrency limits). The options: deps: parent ids (the job waits until they are
-- final), opf: 'run' to run even when a parent ends dead or canceled, pr: the parent
-- whose result it receives, b: batch id, uk/ut/uw: uniqueness key, its window in ms, 1
-- to hold the key for the whole window rather than until the job is final, ldef: the
-- function's limit definition (see _limits.lua) and lfn: the named limits it is under
-- ('a|b'), published so they hold from this job on, ln: named limits of this job only,
-- meta: the caller's meta as JSON text, stored as the record's 'meta' field; tp: the W3C
-- trace context of the enqueue's span as JSON text (jobs/tracing.py), stored as 'tp'.
local jobs = ARGV[5]
-- '0' when this call is sent for the first time (a job with a generated id then cannot
-- exist yet: its record is not looked up), '1' when it may be a resend.
local resent = ARGV[6]

local n = tonumber(job_count)
local maybe_resent = resent ~= '0'
local base = ns_of(prefix)
local final = {completed = true, dead = true, canceled = true}
local NO_EXTRA = {}

-- Read every job and check every parent before writing anything: a parent must exist, or
-- be created earlier in this same call (a chain enqueued at once).
local unpacked, extras, earlier, pos = {}, {}, {}, 1
local limit_defs = nil -- fn:<function>, definition, fl:<function>, names, ... to publish
local named = nil -- the first job that names limits of its own
for i = 1, n do
    local id, spec, pri, delay, at, custom, extra, fn
    id, spec, pri, delay, at, custom, extra, fn, pos = struct.unpack('>Hc0Ic0iddBIc0Hc0', jobs,
        pos)
    unpacked[i] = {id, spec, pri, delay, at, custom, fn}
    if extra ~= '' then
        local ex = cjson.decode(extra)
        extras[i] = ex
        for _, pid in ipairs(ex.deps or {}) do
            if not earlier[pid] and redis.call('EXISTS', prefix .. pid) == 0 then
                return {'missing', id, pid}
            end
        end
        if ex.ldef or ex.lfn then
            limit_defs = limit_defs or {}
            if ex.ldef then
                limit_defs[#limit_defs + 1] = 'fn:' .. fn
                limit_defs[#limit_defs + 1] = ex.ldef
            end
            if ex.lfn then
                limit_defs[#limit_defs + 1] = 'fl:' .. fn
                limit_defs[#limit_defs + 1] = ex.lfn
            end
        end
        named = named or (ex.ln and i)
    end
    earlier[id] = true
end

-- The limits each job is under ('lim': its function's, its queue's, the named limits of
-- its function and its own), all known before anything is written: a job naming a limit
-- that is not defined is refused. Looked up only when limits exist: plain queues pay one
-- EXISTS per call.
if limit_defs then redis.call('HSET', limits, unpack(limit_defs)) end
local lims = NO_EXTRA
if redis.call('EXISTS', limits) == 1 then
    local queue_limit = redis.call('HEXISTS', limits, 'q:' .. queue) == 1
    local of_fn, known = {}, {}
    lims = {}
    for i = 1, n do
        local fn = unpacked[i][7]
        local base_lim = of_fn[fn]
        if not base_lim then
            local def, names = unpack(redis.call('HMGET', limits, 'fn:' .. fn, 'fl:' .. fn))
            base_lim = {}
            if def then base_lim[1] = 'fn:' .. fn end
            if queue_limit then base_lim[#base_lim + 1] = 'q:' .. queue end
            for name in string.gmatch(string.match(names or '', '^[^ ]*'), '[^|]+') do
                base_lim[#base_lim + 1] = 'n:' .. name
            end
            of_fn[fn] = base_lim
        end
        local lim = base_lim
        local own = (extras[i] or NO_EXTRA).ln
        if own then
            lim = {unpack(base_lim)}
            local seen = {}
            for _, name in ipairs(base_lim) do seen[name] = true end
            for _, name in ipairs(own) do
                if not seen['n:' .. name] then
                    seen['n:' .. name] = true
                    lim[#lim + 1] = 'n:' .. name
                end
            end
        end
        for _, name in ipairs(lim) do
            if known[name] == nil and string.sub(name, 1, 2) == 'n:' then
                known[name] = redis.call('HEXISTS', limits, name) == 1
            end
            if known[name] == false then return {'nolimit', unpacked[i][1], string.sub(name, 3)} end
        end
        if #lim > 0 then lims[i] = table.concat(lim, '|') end
    end
elseif named then
    return {'nolimit', unpacked[named][1], extras[named].ln[1]}
end

local now = now_ms()
local seq = redis.call('INCRBY', sequence, n) - n
redis.call('SADD', queues, queue)
local out = {}
local woken = 0 -- jobs made runnable by this call: each may wake one blocked worker
for i = 1, n do
    local id, spec, pri, delay, at, custom, fn = unpack(unpacked[i])
    local ex = extras[i] or NO_EXTRA
    local job = prefix .. id
    -- Also for a generated id when the call may be a resend (its reply lost): it must
    -- find its own jobs.
    local existing = nil
    if maybe_resent or custom == 1 then existing = redis.call('HGET', job, 'st') end
    local owner = nil
    if not existing and ex.uk then
        owner = redis.call('GET', ex.uk)
        if owner then
            local owner_st = redis.call('HGET', prefix .. owner, 'st')
            -- An owner whose record is gone (purged, expired) owns the key no more.
            if not (owner_st and (not final[owner_st] or ex.uw)) then owner = nil end
        end
    end
    if existing then
        out[i] = existing
    elseif owner then
        out[i] = '=' .. owner
    else
        -- A reused custom id whose old record expired may linger in a finished index.
        if custom == 1 then
            redis.call('ZREM', completed, id)
            redis.call('ZREM', dead, id)
            redis.call('ZREM', canceled, id)
        end
        local fields = {'spec', spec, 'q', queue, 'pri', pri, 'att', 0, 'te', now}
        local nf = #fields
        local function field(k, v) fields[nf + 1] = k; fields[nf + 2] = v; nf = nf + 2 end
        if ex.uk then redis.call('SET', ex.uk, id, 'PX', ex.ut) end
        if ex.b then field('b', ex.b) end
        if ex.opf then field('opf', ex.opf) end
        if ex.pr then field('pr', ex.pr) end
        if ex.deps then field('par', table.concat(ex.deps, ',')) end
        if ex.meta then field('meta', ex.meta) end
        if ex.tp then field('tp', ex.tp) end
        if lims[i] then field('lim', lims[i]) end
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
            cancel_record(job, canceled, base .. 'done:' .. id, id, queue, failed, now, events,
                events_len)
            if ex.b then after_final(prefix, id, 'canceled', now, events, events_len) end
        elseif pending > 0 then
            field('st', 'waiting')
            field('deps', pending)
            if at >= 0 then field('at', at) end
            if delay > 0 then field('dly', delay) end
            redis.call('HSET', job, unpack(fields))
            redis.call('ZADD', waiting, now, id)
            if n == 1 then emit(events, events_len, 'e', 'waiting', 'id', id, 'q', queue) end
        elseif due > now then
            field('st', 'scheduled')
            field('due', due)
            redis.call('HSET', job, unpack(fields))
            redis.call('ZADD', scheduled, due, id)
            poke_timers(scheduled, timers, id)
            if n == 1 then emit(events, events_len, 'e', 'scheduled', 'id', id, 'q', queue) end
        else
            field('st', 'queued')
            redis.call('HSET', job, unpack(fields))
            redis.call('ZADD', queued, queue_score(pri, seq + i), id)
            woken = woken + 1
            if n == 1 then emit(events, events_len, 'e', 'enqueued', 'id', id, 'q', queue) end
        end
        out[i] = 1
    end
end
-- Count the jobs created, per queue and function (per queue and per function are sums of
-- these): one command for a call of one function's jobs.
if n == 1 then
    if out[1] == 1 then redis.call('HINCRBY', enqueued, queue .. '|' .. unpacked[1][7], 1) end
else
    local fns, created = {}, {}
    for i = 1, n do
        if out[i] == 1 then
            local fn = unpacked[i][7]
            if not created[fn] then
                fns[#fns + 1] = fn
                created[fn] = 0
            end
            created[fn] = created[fn] + 1
        end
    end
    for _, fn in ipairs(fns) do redis.call('HINCRBY', enqueued, queue .. '|' .. fn, created[fn]) end
end
-- About one wake token per queued job (as wake() keeps it), topped up once per call.
if woken > 0 then
    local tokens_left = redis.call('LLEN', wake_list)
    local missing = woken -- no token left: the queue holds at least the jobs just added
    if tokens_left > 0 then
        missing = math.min(woken, redis.call('ZCARD', queued) - tokens_left)
    end
    if missing > 0 then
        local tokens = {}
        for t = 1, missing do tokens[t] = 1 end
        redis.call('RPUSH', wake_list, unpack(tokens))
    end
end
-- A bulk enqueue reports one event, not one per job.
if n > 1 then emit(events, events_len, 'e', 'bulk_enqueued', 'q', queue, 'n', n) end
return out
