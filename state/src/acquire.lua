-- A request's check, all or nothing: GCRA counters (the arithmetic of
-- state/src/gcra.rs) and in-flight slots, on the Redis server's clock so
-- replicas with skewed clocks agree. Nothing is written unless every
-- counter and slot passes. On a cluster it is called with one key at a time.
--
-- KEYS: n GCRA keys, then m slot keys (sorted sets of request members
-- scored by when their lease ends).
-- ARGV: n, member, lease_ms, then per GCRA key: amount, period_us, cost;
-- then per slot key: limit.
-- Returns per GCRA key {allowed, remaining, reset_us, retry_after_us},
-- then per slot key {taken, left}.
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now / 1000)
local n = tonumber(ARGV[1])
local member = ARGV[2]
local lease = tonumber(ARGV[3])
-- A key that is not what this script keeps (another type, or a value no
-- limit could have written) is dropped and counted from full: a stray
-- write must neither break a limit nor lock a caller out for good.
local function tat_of(key, period)
  local v = redis.pcall('GET', key)
  if type(v) == 'table' and v.err then
    redis.call('DEL', key)
    return now
  end
  local tat = tonumber(v)
  if tat == nil or tat ~= tat or tat > now + 2 * period then
    if v then redis.call('DEL', key) end
    return now
  end
  return tat
end
local out = {}
local writes = {}
local ok = true
for i = 1, n do
  local amount = tonumber(ARGV[3 + 3 * i - 2])
  local period = tonumber(ARGV[3 + 3 * i - 1])
  local cost = math.min(tonumber(ARGV[3 + 3 * i]), amount)
  local tat = tat_of(KEYS[i], period)
  local base = math.max(tat, now)
  local new = base
  if cost > 0 then new = base + math.max(1, math.ceil(cost * period / amount)) end
  if new - now > period then
    ok = false
    local left = math.max(0, math.floor((period - (base - now)) * amount / period))
    table.insert(out, 0); table.insert(out, left)
    table.insert(out, base - now); table.insert(out, new - now - period)
  else
    table.insert(out, 1)
    table.insert(out, math.floor((period - (new - now)) * amount / period))
    table.insert(out, new - now); table.insert(out, 0)
    if new > base then writes[i] = new end
  end
end
local m = #KEYS - n
for j = 1, m do
  local key = KEYS[n + j]
  local limit = tonumber(ARGV[3 + 3 * n + j])
  local swept = redis.pcall('ZREMRANGEBYSCORE', key, '-inf', now_ms)
  if type(swept) == 'table' and swept.err then redis.call('DEL', key) end
  local held = redis.call('ZCARD', key)
  if held >= limit then
    ok = false
    table.insert(out, 0); table.insert(out, 0)
  else
    table.insert(out, 1); table.insert(out, limit - held - 1)
  end
end
if ok then
  for i, v in pairs(writes) do
    redis.call('SET', KEYS[i], string.format('%.0f', v), 'PX', math.ceil((v - now) / 1000) + 1000)
  end
  for j = 1, m do
    redis.call('ZADD', KEYS[n + j], now_ms + lease, member)
    redis.call('PEXPIRE', KEYS[n + j], lease)
  end
end
return out
