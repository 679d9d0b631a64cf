-- Undo a consumption no replica acknowledged (the caller answered 503, not a session): the
-- token is usable again. Only the consumer that holds the claim can undo, and only while the
-- token is still its consumption.
-- KEYS[1] = the token's record; ARGV[1] = the claim, ARGV[2] = the record blob.
local fields = redis.call('HMGET', KEYS[1], 'state', 'claim')
if fields[1] ~= 'used' or fields[2] ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'new', 'blob', ARGV[2])
redis.call('HDEL', KEYS[1], 'claim')
return 1
