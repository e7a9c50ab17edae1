-- A cache miss's leader looks for the answer; when there is none, it
-- leads for every replica: its marker (ARGV[1]) in the value's place for
-- ARGV[2] ms, which another replica's identical miss finds and waits on
-- until the answer's write replaces it. Returns the value found (an answer
-- or another leader's marker), or false: this call leads.
local v = redis.call('GET', KEYS[1])
if v then
  return v
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
