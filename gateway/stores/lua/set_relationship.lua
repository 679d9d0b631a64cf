-- Grant or revoke a relationship and keep the account's index of them, in one step. Both keys
-- carry the account as hash tag: one Cluster slot.
-- KEYS[1] = the relationship, KEYS[2] = the account's set of relationships;
-- ARGV[1] = '1' to grant, '0' to revoke; ARGV[2] = the set member (subject, actor).
if ARGV[1] == '1' then
  redis.call('SET', KEYS[1], '1')
  redis.call('SADD', KEYS[2], ARGV[2])
else
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[2])
end
return 1
