-- Look a key record up by its digest in one round trip.
-- KEYS[1] = digest -> key id index; ARGV[1] = prefix of key records.
local key_id = redis.call('GET', KEYS[1])
if not key_id then
  return false
end
return redis.call('GET', ARGV[1] .. key_id)
