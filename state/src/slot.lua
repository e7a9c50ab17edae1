-- An in-flight slot: a sorted set of request ids scored by when their lease
-- ends (a replica that dies mid-request frees its slots when they lapse).
-- KEYS[1]: the set. ARGV: limit, member, lease_ms. Returns {taken, left}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
local limit = tonumber(ARGV[1])
if n >= limit then return {0, 0} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return {1, limit - n - 1}
