-- Keeps or ends a cache miss's lead, while KEYS[1] still holds the
-- leader's marker ARGV[1] (an answer written meanwhile, or another's
-- marker, is left alone): ARGV[2] 'renew' extends it to ARGV[3] ms;
-- 'yield' replaces it with ARGV[4] for ARGV[3] ms (the answer will not be
-- stored: whoever waits asks a backend); 'drop' deletes it (whoever waits
-- may lead). Returns 1 when the marker was there.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] == 'renew' then
  return redis.call('PEXPIRE', KEYS[1], ARGV[3])
elseif ARGV[2] == 'yield' then
  redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[3])
  return 1
end
return redis.call('DEL', KEYS[1])
