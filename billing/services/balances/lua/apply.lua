-- Mirror one PostgreSQL change (made in the same transaction, under the tenant's shared
-- balance lock) onto a tenant's keys. Absent keys stay absent: the next seed reads
-- PostgreSQL after this transaction commits, so it includes the change (never INCR a cold key).
--
-- KEYS[1] bal:{t}; KEYS[2 .. 1+nc] quota cells; KEYS[2+nc ..] hold keys to delete
-- ARGV[1] balance delta (micros); ARGV[2] nc; then 4 deltas per cell: t, m, ht, hm
local nc = tonumber(ARGV[2])
if ARGV[1] ~= "0" and redis.call("EXISTS", KEYS[1]) == 1 then
  redis.call("INCRBY", KEYS[1], ARGV[1])
end
local fields = {"t", "m", "ht", "hm"}
for i = 1, nc do
  local key = KEYS[1 + i]
  if redis.call("EXISTS", key) == 1 then
    for j = 1, 4 do
      local d = ARGV[2 + 4 * (i - 1) + j]
      if d ~= "0" then
        redis.call("HINCRBY", key, fields[j], d)
      end
    end
  end
end
for i = 2 + nc, #KEYS do
  redis.call("DEL", KEYS[i])
end
return 1
