-- Consume a mobile token: the one place its single use is decided.
-- KEYS[1] = the token's record (a hash: state, exp, blob); ARGV[1] = now (ms).
-- Returns {state} or {"ok", blob}. Exactly one caller ever receives "ok" for a token.
local fields = redis.call('HMGET', KEYS[1], 'state', 'exp', 'blob')
if not fields[1] then
  return {'unknown'}
end
if fields[1] == 'used' then
  return {'used'}
end
if tonumber(fields[2]) <= tonumber(ARGV[1]) then
  return {'expired'}
end
redis.call('HSET', KEYS[1], 'state', 'used')
redis.call('HDEL', KEYS[1], 'blob')
return {'ok', fields[3]}
