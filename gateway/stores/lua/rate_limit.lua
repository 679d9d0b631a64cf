-- GCRA, one atomic step (the same arithmetic as gateway/stores/gcra.py).
-- KEYS[1] = bucket; ARGV = limit, period (ms), now (ms).
-- Returns {allowed (0/1), remaining, reset_after (ms)}.
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local interval = period / limit
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then
  tat = now
end
local new_tat = tat + interval
local allow_at = new_tat - period
if allow_at > now then
  return {0, 0, math.ceil(allow_at - now)}
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now) + 1)
local remaining = math.floor((period - (new_tat - now)) / interval + 1e-9)
if remaining < 0 then
  remaining = 0
end
return {1, remaining, math.ceil(new_tat - now)}
