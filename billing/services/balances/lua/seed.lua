-- Seed a tenant's keys from values read in PostgreSQL under the tenant's EXCLUSIVE balance
-- lock (no mirror can run meanwhile). SET, never INCR: a cold key is never taken as zero.
-- mode "nx": set only absent keys (seeding); "set": overwrite (the reconciler fixing drift).
--
-- KEYS[1] bal:{t}; KEYS[2] qk:{t} (the set of the tenant's cell keys); KEYS[3..] quota cells
-- ARGV[1] mode; ARGV[2] balance (micros, "" = leave bal alone); then per cell 5 values:
--   t, m, ht, hm, expire-at (unix seconds, "0" = never)
-- Reply: the values before: balance ("" when absent), then per cell t, m, ht, hm ("" when absent).
local mode = ARGV[1]
local prev = redis.call("GET", KEYS[1])
local out = {prev or ""}
if ARGV[2] ~= "" and (mode == "set" or not prev) then
  redis.call("SET", KEYS[1], ARGV[2])
end
for i = 3, #KEYS do
  local base = 2 + 5 * (i - 3)
  local exists = redis.call("EXISTS", KEYS[i]) == 1
  local v = redis.call("HMGET", KEYS[i], "t", "m", "ht", "hm")
  for j = 1, 4 do
    if exists then
      out[#out + 1] = v[j] or "0"
    else
      out[#out + 1] = ""
    end
  end
  if mode == "set" or not exists then
    redis.call("HSET", KEYS[i], "t", ARGV[base + 1], "m", ARGV[base + 2], "ht", ARGV[base + 3], "hm", ARGV[base + 4])
    if ARGV[base + 5] ~= "0" then
      redis.call("EXPIREAT", KEYS[i], ARGV[base + 5])
    end
    redis.call("SADD", KEYS[2], KEYS[i])
  end
end
return out
