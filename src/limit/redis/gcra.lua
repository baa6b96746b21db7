-- GCRA over the limits of one request, atomically (the arithmetic of
-- src/limit/gcra.rs, on Redis's clock so that the replicas' clocks do not matter).
--
-- KEYS[1]      the replicas sorted set
-- KEYS[1 + i]  limit i's key; its value is the key's TAT, in nanoseconds since the
--              Unix epoch on this server's clock, as decimal digits
-- ARGV[1]      this replica's id, or "" when it does not announce itself this time
-- ARGV[2]      how long an announcement counts, in milliseconds
-- ARGV[3i], ARGV[3i + 1], ARGV[3i + 2]
--              limit i's emission interval T, tolerance (burst × T) and free
--              tolerance (delay × T), in nanoseconds
--
-- Returns {0, 0, wait, replicas} when every limit lets the request through (each
-- key charged one T; `wait` is the longest hold-back any of them asks), or
-- {1, i - 1, retry_after, replicas} when limit i is the first to refuse (no key
-- charged; `retry_after` is when every refusing limit would let it through), with
-- `replicas` the replicas seen within the window, or -1 when not announcing.
--
-- Lua numbers are doubles, exact for integers below 2^53. An absolute time in
-- nanoseconds is not (it is about 2^61), so times are kept as seconds plus
-- nanoseconds and only differences (at most 2^52 ns, which the caller ensures) are
-- ever formed in nanoseconds.

-- Before Redis 5, a script that read the clock could only write if replicated
-- by its effects; since then this is the default and the call a no-op.
if redis.replicate_commands then
  redis.replicate_commands()
end

local clock = redis.call('TIME')
local now_s = tonumber(clock[1])
local now_ns = tonumber(clock[2]) * 1000
local NS = 1000000000

local replicas = -1
if ARGV[1] ~= '' then
  local now_ms = now_s * 1000 + math.floor(now_ns / 1000000)
  local window = tonumber(ARGV[2])
  redis.call('ZADD', KEYS[1], now_ms, ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now_ms - window))
  redis.call('PEXPIRE', KEYS[1], window)
  replicas = redis.call('ZCARD', KEYS[1])
end

-- How far ahead of now each key's TAT is (nginx's excess, in time), after this
-- request where it passes. A key listed twice is charged twice, as the local
-- table would charge it.
local ahead = {}
local by_key = {}
local wait = 0
local refused = 0
local retry = 0
for i = 1, #KEYS - 1 do
  local key = KEYS[i + 1]
  local emission = tonumber(ARGV[3 * i])
  local tolerance = tonumber(ARGV[3 * i + 1])
  local free = tonumber(ARGV[3 * i + 2])
  local excess = by_key[key]
  if excess == nil then
    excess = 0
    local tat = redis.call('GET', key)
    if tat and #tat > 9 then
      local s = tonumber(string.sub(tat, 1, -10))
      local ns = tonumber(string.sub(tat, -9))
      if s and ns then
        excess = math.max(0, (s - now_s) * NS + (ns - now_ns))
      end
    end
  end
  if excess > tolerance then
    if refused == 0 then
      refused = i
    end
    retry = math.max(retry, excess - tolerance)
  else
    wait = math.max(wait, excess - free)
    excess = excess + emission
  end
  by_key[key] = excess
  ahead[i] = excess
end

if refused > 0 then
  return {1, refused - 1, retry, replicas}
end

for i = 1, #KEYS - 1 do
  -- now + ahead, carried into whole seconds without dividing a large number.
  local total = now_ns + ahead[i]
  local carry = math.floor(total / NS)
  local ns = total - carry * NS
  if ns < 0 then
    carry = carry - 1
    ns = ns + NS
  elseif ns >= NS then
    carry = carry + 1
    ns = ns - NS
  end
  -- The key lives until its TAT (rounded up to a millisecond): past it, a key
  -- holds nothing a missing one would not.
  redis.call('SET', KEYS[i + 1], string.format('%d%09d', now_s + carry, ns),
    'PX', math.ceil(ahead[i] / 1000000))
end
return {0, 0, wait, replicas}
