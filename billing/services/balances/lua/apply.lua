-- Mirror one PostgreSQL change (made in the same transaction, under the tenant's shared
-- balance lock) onto a tenant's keys. Absent keys stay absent: the next seed reads
-- PostgreSQL after this transaction commits, so it includes the change (never INCR a cold key).
--
-- KEYS[1] bal:{t}; KEYS[2 .. 1+nc] quota cells; then nh hold keys to delete; then nb token
-- buckets to correct; then np parallel-slot sets (limits.py)
-- ARGV[1] balance delta (micros); ARGV[2] nc; then 4 deltas per cell: t, m, ht, hm;
-- then nh; then nb and nb token deltas; then np and np members to remove (hold keys).
-- A bucket is drained to now before its delta is added, and never goes below empty.
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
local a = 2 + 4 * nc + 1
local nh = tonumber(ARGV[a])
local k = 1 + nc
for i = 1, nh do
  redis.call("DEL", KEYS[k + i])
end
k = k + nh
local nb = tonumber(ARGV[a + 1])
if nb > 0 then
  local t = redis.call("TIME")
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  for i = 1, nb do
    local key = KEYS[k + i]
    local h = redis.call("HMGET", key, "lv", "ts", "lim")
    if h[1] and h[3] then
      local lim = tonumber(h[3])
      local level = tonumber(h[1]) - math.max(now - tonumber(h[2]), 0) * lim / 60000
      level = math.max(math.max(level, 0) + tonumber(ARGV[a + 1 + i]), 0)
      redis.call("HSET", key, "lv", tostring(level), "ts", tostring(now))
      redis.call("PEXPIRE", key, math.ceil(level * 60000 / lim) + 1000)
    end
  end
end
k = k + nb
local p = a + 2 + nb
local np = tonumber(ARGV[p])
for i = 1, np do
  redis.call("ZREM", KEYS[k + i], ARGV[p + i])
end
return 1
