-- Create or replace an API key's record and its indexes in one step. Every key here carries
-- the API keys' hash tag, so on a Cluster they live in one slot.
-- KEYS[1] = the record, KEYS[2] = the digest's index entry, KEYS[3] = the set of every key id,
-- KEYS[4] (optional) = the set of the account's key ids. ARGV[1] = key id, ARGV[2] = record,
-- ARGV[3] (optional) = the record this replaces: nothing is written unless it is still the
-- stored one (0 returned), so an undo never overwrites a change made meanwhile.
if ARGV[3] and redis.call('GET', KEYS[1]) ~= ARGV[3] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
if KEYS[4] then
  redis.call('SADD', KEYS[4], ARGV[1])
end
return 1
