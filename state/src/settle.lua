-- Settles finished requests: moves GCRA counters by signed deltas (a refund
-- stops at a full counter, a debt at one more period's worth) and frees
-- in-flight slots. Many requests' settles come in one call, merged.
-- KEYS: n GCRA keys, then slot keys. ARGV: n, then per GCRA key: amount,
-- period_us, delta; then per slot key: the member to remove.
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
for i = 1, n do
  local amount = tonumber(ARGV[1 + 3 * i - 2])
  local period = tonumber(ARGV[1 + 3 * i - 1])
  local delta = tonumber(ARGV[1 + 3 * i])
  local v = redis.pcall('GET', KEYS[i])
  local tat = now
  if type(v) ~= 'table' then tat = tonumber(v) or now end
  if tat ~= tat or tat > now + 2 * period then tat = now end
  local base = math.max(tat, now)
  local v
  if delta >= 0 then
    v = math.min(base + math.max(1, math.ceil(delta * period / amount)), math.max(now + 2 * period, base))
  else
    v = math.max(base - math.floor(-delta * period / amount), now)
  end
  if v > now then
    redis.call('SET', KEYS[i], string.format('%.0f', v), 'PX', math.ceil((v - now) / 1000) + 1000)
  else
    redis.call('DEL', KEYS[i])
  end
end
for j = n + 1, #KEYS do
  redis.pcall('ZREM', KEYS[j], ARGV[1 + 3 * n + (j - n)])
end
return #KEYS
