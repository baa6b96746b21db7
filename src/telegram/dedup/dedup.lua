-- One operation on the shared dedup state of one update, atomically
-- (src/telegram/dedup/redis.rs says why each one does what it does).
--
-- KEYS[1]  the update's state: absent (free), 'C' .. token (a replica is
--          delivering it; expires with the lease), or 'D' .. reply (a bot
--          answered it with a 2xx; expires after the dedup TTL)
-- KEYS[2]  how many of its deliveries reached a bot and failed, as digits
--          (expires the dedup TTL after the last failure)
-- ARGV[1]  the operation: claim, peek, done, failed or release
-- ARGV[2]  the caller's claim token
-- ARGV[3]  milliseconds, at least 1: the lease (claim) or the TTL (done, failed)
-- ARGV[4]  done only: the state to keep, 'D' .. reply
--
-- Returns, for claim and peek: {0, failures} when free (claim: it is the
-- caller's now), {1, 0} when held, {2, state} when done. done: 1 when stored,
-- 0 when a reply was there already (it stays). failed: the failures so far,
-- this one included, or 0 when the update is done. release: 1 when the
-- caller's claim was dropped, else 0.

local state = redis.call('GET', KEYS[1])
local op = ARGV[1]
local done = state and string.sub(state, 1, 1) == 'D'
local mine = state == 'C' .. ARGV[2]

if op == 'claim' or op == 'peek' then
  if done then
    return {2, state}
  end
  -- Held, by anyone: the caller's own claim too (one delivery at a time).
  if state then
    return {1, 0}
  end
  if op == 'claim' then
    redis.call('SET', KEYS[1], 'C' .. ARGV[2], 'PX', ARGV[3])
  end
  return {0, tonumber(redis.call('GET', KEYS[2]) or '0')}
elseif op == 'done' then
  -- The first reply stays, so that every re-send gets the same one.
  if done then
    return 0
  end
  -- Over a claim, whoever holds it: the update was delivered.
  redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[3])
  redis.call('DEL', KEYS[2])
  return 1
elseif op == 'failed' then
  if done then
    return 0
  end
  if mine then
    redis.call('DEL', KEYS[1])
  end
  local failures = redis.call('INCR', KEYS[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return failures
elseif op == 'release' then
  if mine then
    redis.call('DEL', KEYS[1])
    return 1
  end
  return 0
end
return redis.error_reply('unknown dedup operation ' .. tostring(op))
