"""Lua scripts of the Redis queue protocol. Every step that touches more than one key is one
script, so it is atomic. All keys share the hash tag of ``base`` (``{prefix}:q:``) and so live
in one Redis Cluster slot.

Keys under ``base``: ``j:<id>`` job hash; ``ready`` (zset, score = priority band + sequence:
lowest first means highest priority, then FIFO); ``scheduled`` and ``retrying`` (zsets by due
time in ms); ``running`` (zset by lease deadline in ms); ``done`` and ``dead`` (zsets by finish
time); ``unique`` (hash unique_key -> job id); ``seq`` (counter); ``wake`` (list: one token per
enqueue so idle workers blocked on BLPOP wake at once).

Times come from the Redis server clock (``TIME``), so workers on different hosts agree.
"""

from __future__ import annotations

FIXED_KEYS = ("seq", "ready", "scheduled", "retrying", "running", "done", "dead", "unique", "wake")
"""The keys under ``base`` every script may touch; each call declares them as KEYS."""

# Priority band width: sequence numbers stay below it, and scores stay below 1e14 so that the
# %.14g number formatting of Redis' Lua keeps them exact.
PRELUDE = """
local BAND = 1099511627776
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- The same as text, built from TIME's digits: a Lua number given to redis.call is turned into
-- text with snprintf('%.17g'), which costs Redis more than the rest of a small command.
local function now_ms_text()
  local t = redis.call('TIME')
  return t[1] .. string.sub('00000' .. t[2], -6, -4)
end
local function ready_score(pri, seq)
  return (3 - tonumber(pri)) * BAND + tonumber(seq)
end
-- At most 128 tokens; trimmed back to 64 once the list passes 128, not on every push.
local function wake(b)
  if redis.call('RPUSH', b .. 'wake', '1') > 128 then
    redis.call('LTRIM', b .. 'wake', '-64', '-1')
  end
end
local function promote(b, now, limit)
  local moved = 0
  for _, z in ipairs({'scheduled', 'retrying'}) do
    local due = redis.call('ZRANGEBYSCORE', b .. z, '-inf', now, 'LIMIT', 0, limit)
    for _, id in ipairs(due) do
      redis.call('ZREM', b .. z, id)
      local jk = b .. 'j:' .. id
      local v = redis.call('HMGET', jk, 'pri', 'seq')
      if v[1] then
        redis.call('ZADD', b .. 'ready', ready_score(v[1], v[2]), id)
        redis.call('HSET', jk, 'status', 'queued')
        moved = moved + 1
      end
    end
  end
  return moved
end
local function free_unique(b, id, uk)
  if uk and uk ~= '' and redis.call('HGET', b .. 'unique', uk) == id then
    redis.call('HDEL', b .. 'unique', uk)
  end
end
local function is_active(st)
  return st == 'queued' or st == 'scheduled' or st == 'running' or st == 'retrying'
end
"""

# ARGV: base, then 8 fields per job: id, type, payload, priority, max_retries, delay_ms,
# unique_key ('' = none), trace context ('' = none). Returns per job: its creation time in ms
# (an integer) when created, the id of the job already there (text) otherwise. The client knows
# the rest of a created job: it is due at the creation time plus the delay_ms it sent.
ENQUEUE = (
    PRELUDE
    + """
local b = ARGV[1]
local now = now_ms_text()
local out = {}
local woke = false
for i = 2, #ARGV, 8 do
  local id, typ, payload, pri, max, delay, uk, tc =
    ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4], tonumber(ARGV[i+5]), ARGV[i+6],
    ARGV[i+7]
  local jk = b .. 'j:' .. id
  local existing = nil
  if redis.call('EXISTS', jk) == 1 then
    existing = id
  elseif uk ~= '' then
    local held = redis.call('HGET', b .. 'unique', uk)
    if held and is_active(redis.call('HGET', b .. 'j:' .. held, 'status')) then
      existing = held
    end
  end
  if existing then
    table.insert(out, existing)
  else
    local seq = redis.call('INCR', b .. 'seq')
    local at = now
    local status = 'queued'
    if delay > 0 then
      status = 'scheduled'
      at = string.format('%d', tonumber(now) + delay)
      redis.call('ZADD', b .. 'scheduled', at, id)
    else
      redis.call('ZADD', b .. 'ready', string.format('%d', ready_score(pri, seq)), id)
      woke = true
    end
    redis.call('HSET', jk, 'id', id, 'type', typ, 'payload', payload, 'pri', pri, 'max', max,
      'retries', '0', 'status', status, 'created', now, 'sched', at,
      'seq', string.format('%d', seq), 'uk', uk)
    if tc ~= '' then redis.call('HSET', jk, 'tc', tc) end
    if uk ~= '' then redis.call('HSET', b .. 'unique', uk, id) end
    table.insert(out, tonumber(now))
  end
end
if woke then wake(b) end
return out
"""
)

# ARGV: base, worker, limit, lease_ms. Returns {now, next_due_ms_or_-1, id, type, payload, pri,
# max, retries, created, sched, uk, ...}.
FETCH = (
    PRELUDE
    + """
local b, worker, limit, lease = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
promote(b, now, 1000)
local popped = redis.call('ZPOPMIN', b .. 'ready', limit)
local out = {now, -1}
local deadline = now + lease
for i = 1, #popped, 2 do
  local id = popped[i]
  local jk = b .. 'j:' .. id
  local v = redis.call('HMGET', jk, 'type', 'payload', 'pri', 'max', 'retries',
    'created', 'sched', 'uk', 'tc')
  if v[1] then
    redis.call('HSET', jk, 'status', 'running', 'started', now, 'worker', worker)
    redis.call('ZADD', b .. 'running', deadline, id)
    table.insert(out, id)
    for k = 1, 9 do table.insert(out, v[k] or '') end
  end
end
if #out == 2 then
  local nxt = -1
  for _, z in ipairs({'scheduled', 'retrying'}) do
    local first = redis.call('ZRANGE', b .. z, 0, 0, 'WITHSCORES')
    if first[2] then
      local s = tonumber(first[2])
      if nxt < 0 or s < nxt then nxt = s end
    end
  end
  out[2] = nxt
end
return out
"""
)

# ARGV: base, worker, lease_ms, ids...
HEARTBEAT = (
    PRELUDE
    + """
local b, worker, lease = ARGV[1], ARGV[2], tonumber(ARGV[3])
local deadline = now_ms() + lease
local n = 0
for i = 4, #ARGV do
  local v = redis.call('HMGET', b .. 'j:' .. ARGV[i], 'status', 'worker')
  if v[1] == 'running' and v[2] == worker then
    redis.call('ZADD', b .. 'running', 'XX', deadline, ARGV[i])
    n = n + 1
  end
end
return n
"""
)

# ARGV: base, worker, ids...
COMPLETE = (
    PRELUDE
    + """
local b, worker = ARGV[1], ARGV[2]
local now = now_ms()
local n = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local jk = b .. 'j:' .. id
  local v = redis.call('HMGET', jk, 'status', 'worker', 'uk')
  if v[1] == 'running' and v[2] == worker then
    redis.call('HSET', jk, 'status', 'succeeded', 'finished', now)
    redis.call('ZREM', b .. 'running', id)
    redis.call('ZADD', b .. 'done', now, id)
    free_unique(b, id, v[3])
    n = n + 1
  end
end
return n
"""
)

# ARGV: base, worker, id, error, delay_ms. Returns 'retrying', 'dead' or '' (lease lost).
FAIL = (
    PRELUDE
    + """
local b, worker, id, err, delay = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local jk = b .. 'j:' .. id
local v = redis.call('HMGET', jk, 'status', 'worker', 'retries', 'max', 'uk')
if v[1] ~= 'running' or v[2] ~= worker then return '' end
local now = now_ms()
redis.call('ZREM', b .. 'running', id)
local retries, max = tonumber(v[3]), tonumber(v[4])
if retries < max then
  local at = now + delay
  local seq = redis.call('INCR', b .. 'seq')
  redis.call('HSET', jk, 'status', 'retrying', 'retries', retries + 1, 'error', err,
    'sched', at, 'seq', seq)
  redis.call('ZADD', b .. 'retrying', at, id)
  return 'retrying'
end
redis.call('HSET', jk, 'status', 'dead', 'finished', now, 'error', err)
redis.call('ZADD', b .. 'dead', now, id)
free_unique(b, id, v[5])
return 'dead'
"""
)

# ARGV: base, worker, ids... Unstarted jobs go back to their place in the ready set.
RELEASE = (
    PRELUDE
    + """
local b, worker = ARGV[1], ARGV[2]
local n = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local jk = b .. 'j:' .. id
  local v = redis.call('HMGET', jk, 'status', 'worker', 'pri', 'seq')
  if v[1] == 'running' and v[2] == worker then
    redis.call('ZREM', b .. 'running', id)
    redis.call('ZADD', b .. 'ready', ready_score(v[3], v[4]), id)
    redis.call('HSET', jk, 'status', 'queued')
    redis.call('HDEL', jk, 'worker')
    n = n + 1
  end
end
if n > 0 then wake(b) end
return n
"""
)

# ARGV: base, finished_ttl_ms, limit. Returns the number of expired leases requeued.
REAP = (
    PRELUDE
    + """
local b, ttl, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local expired = redis.call('ZRANGEBYSCORE', b .. 'running', '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(expired) do
  local jk = b .. 'j:' .. id
  local v = redis.call('HMGET', jk, 'pri', 'seq')
  redis.call('ZREM', b .. 'running', id)
  if v[1] then
    redis.call('ZADD', b .. 'ready', ready_score(v[1], v[2]), id)
    redis.call('HSET', jk, 'status', 'queued')
    redis.call('HDEL', jk, 'worker')
  end
end
local moved = promote(b, now, limit)
local old = redis.call('ZRANGEBYSCORE', b .. 'done', '-inf', now - ttl, 'LIMIT', 0, limit)
for _, id in ipairs(old) do
  redis.call('DEL', b .. 'j:' .. id)
  redis.call('ZREM', b .. 'done', id)
end
if #expired > 0 or moved > 0 then wake(b) end
return #expired
"""
)

# ARGV: base, id. Returns 'ok', 'missing' or the current status.
RETRY_DEAD = (
    PRELUDE
    + """
local b, id = ARGV[1], ARGV[2]
local jk = b .. 'j:' .. id
local v = redis.call('HMGET', jk, 'status', 'retries', 'pri', 'uk')
if not v[1] then return 'missing' end
if v[1] ~= 'dead' then return v[1] end
local now = now_ms()
local seq = redis.call('INCR', b .. 'seq')
redis.call('ZREM', b .. 'dead', id)
redis.call('HSET', jk, 'status', 'queued', 'retries', tonumber(v[2]) + 1, 'sched', now,
  'seq', seq, 'finished', '')
redis.call('ZADD', b .. 'ready', ready_score(v[3], seq), id)
local uk = v[4]
if uk and uk ~= '' then
  local held = redis.call('HGET', b .. 'unique', uk)
  if not held or not is_active(redis.call('HGET', b .. 'j:' .. held, 'status')) then
    redis.call('HSET', b .. 'unique', uk, id)
  end
end
wake(b)
return 'ok'
"""
)

# ARGV: base, id. Deletes a dead job (its hash, its place in ``dead``, the unique key it holds).
# Returns 1, or 0 when the job is missing or not dead. Used when a dead job moves to another
# layout (``layout.py``).
DISCARD_DEAD = (
    PRELUDE
    + """
local b, id = ARGV[1], ARGV[2]
local jk = b .. 'j:' .. id
local v = redis.call('HMGET', jk, 'status', 'uk')
if v[1] ~= 'dead' then return 0 end
redis.call('ZREM', b .. 'dead', id)
free_unique(b, id, v[2])
redis.call('DEL', jk)
return 1
"""
)
