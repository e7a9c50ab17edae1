-- GCRA on one key (the same arithmetic as state/src/gcra.rs), on the Redis
-- server's clock so replicas with skewed clocks agree.
-- KEYS[1]: the key. ARGV: amount, period_us, cost, mode: "c" checks and
-- charges `cost`, "a" adjusts by a signed `cost` (a settle: refund or debt).
-- Returns {allowed, remaining, reset_us, retry_after_us}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local amount = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local function cost_us(c)
  if c == 0 then return 0 end
  return math.max(1, math.ceil(c * period / amount))
end
local function units_in(us)
  return math.floor(us * amount / period)
end
local tat = tonumber(redis.call('GET', KEYS[1]) or now) or now
local base = math.max(tat, now)
local function store(v)
  if v > now then
    redis.call('SET', KEYS[1], string.format('%.0f', v), 'PX', math.ceil((v - now) / 1000) + 1000)
  else
    redis.call('DEL', KEYS[1])
  end
end
if ARGV[4] == 'a' then
  local v
  if cost >= 0 then v = base + cost_us(cost) else v = math.max(base - cost_us(-cost), now) end
  store(v)
  return {1, 0, v - now, 0}
end
cost = math.min(cost, amount)
local new = base + cost_us(cost)
if new - now > period then
  return {0, math.max(0, units_in(period - (base - now))), base - now, new - now - period}
end
if cost > 0 then store(new) end
return {1, units_in(period - (new - now)), new - now, 0}
