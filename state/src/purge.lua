-- Shares a cache purge with every replica, in one step: the hash KEYS[1]
-- (the admin state, see admin.lua) counts purges in `_purges` and keeps
-- the last ARGV[3] of them in a ring of fields `purge:N` (N: the purge's
-- number modulo the ring), each `NUMBER PURGE`; then bumps `_version` and
-- publishes it, so every replica re-reads the hash. Returns the number.
-- ARGV: channel, epoch (as admin.lua's), ring size, the purge (JSON).
redis.call('HSETNX', KEYS[1], '_epoch', ARGV[2])
local n = redis.call('HINCRBY', KEYS[1], '_purges', 1)
redis.call('HSET', KEYS[1], 'purge:' .. (n % tonumber(ARGV[3])), n .. ' ' .. ARGV[4])
local v = redis.call('HINCRBY', KEYS[1], '_version', 1)
redis.call('PUBLISH', ARGV[1], v)
return n
