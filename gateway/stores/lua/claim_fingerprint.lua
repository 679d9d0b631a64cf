-- Record the master key's fingerprint unless one is recorded; return the one recorded.
-- KEYS[1] = the fingerprint; ARGV[1] = this process's fingerprint.
local recorded = redis.call('GET', KEYS[1])
if recorded then
  return recorded
end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
