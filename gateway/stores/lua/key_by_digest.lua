-- Look a key record up by its digest in one round trip.
-- KEYS[1] = digest -> key id index; ARGV[1] = prefix of key records. The record's name is
-- built here, so it shares KEYS[1]'s hash tag (the API keys' one): the same Cluster slot.
local key_id = redis.call('GET', KEYS[1])
if not key_id then
  return false
end
return redis.call('GET', ARGV[1] .. key_id)
