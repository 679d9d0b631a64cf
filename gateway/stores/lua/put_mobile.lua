-- Store a new mobile token's record in one round trip.
-- KEYS[1] = the record (a hash: state, exp, blob); ARGV[1] = expiry (ms since the epoch),
-- ARGV[2] = the record blob, ARGV[3] = how long Redis keeps the hash (ms).
redis.call('HSET', KEYS[1], 'state', 'new', 'exp', ARGV[1], 'blob', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
