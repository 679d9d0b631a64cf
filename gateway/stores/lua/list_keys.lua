-- The records of the key ids in a set, in one round trip.
-- KEYS[1] = a set of key ids (every key's, or one account's); ARGV[1] = prefix of key records,
-- which shares KEYS[1]'s hash tag (the API keys' one): the same Cluster slot.
local ids = redis.call('SMEMBERS', KEYS[1])
table.sort(ids)
local records = {}
for _, key_id in ipairs(ids) do
  local record = redis.call('GET', ARGV[1] .. key_id)
  if record then
    records[#records + 1] = record
  end
end
return records
