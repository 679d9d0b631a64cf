-- Consume a mobile token: the one place its single use is decided.
-- KEYS[1] = the token's record (a hash: state, exp, blob); ARGV[1] = now (ms), ARGV[2] = this
-- consumer's claim (random), kept so that only it can undo the consumption (unconsume_mobile).
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
redis.call('HSET', KEYS[1], 'state', 'used', 'claim', ARGV[2])
redis.call('HDEL', KEYS[1], 'blob')
return {'ok', fields[3]}
