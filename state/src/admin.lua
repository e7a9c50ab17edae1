-- Writes the admin state shared by replicas, in one step: sets and deletes
-- fields of the hash KEYS[1], bumps its `_version`, and publishes the new
-- version on the channel ARGV[1], so every replica re-reads it. The hash's
-- `_epoch` is set once, by whoever creates it (ARGV[2], unique to that write): replicas
-- that see another one know Redis lost the hash.
-- ARGV: channel, epoch, number of fields to set n, then n field/value
-- pairs, then the fields to delete.
redis.call('HSETNX', KEYS[1], '_epoch', ARGV[2])
local n = tonumber(ARGV[3])
for i = 0, n - 1 do
  redis.call('HSET', KEYS[1], ARGV[4 + 2 * i], ARGV[5 + 2 * i])
end
for i = 4 + 2 * n, #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
end
local v = redis.call('HINCRBY', KEYS[1], '_version', 1)
redis.call('PUBLISH', ARGV[1], v)
return v
