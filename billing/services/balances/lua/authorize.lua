-- Admission of one request of one tenant: "check" (read only) or "hold" (check and reserve).
-- Every key carries the tenant's hash tag ({tenant_id}), so the script touches one cluster slot.
-- Amounts are integer micro-units and tokens, stored as strings; only INCRBY/HINCRBY change them.
-- Lua numbers are doubles: comparisons are exact up to 2^53 micro-units (9e9 currency units).
--
-- KEYS[1]     bal:{t}                  the wallet balance (== PostgreSQL's, net of open holds)
-- KEYS[2]     hold:{t}:<request_id>    "micros:tokens" of a placed hold (idempotency per request)
-- KEYS[3..8]  q:{t}:...                quota cells: tenant day/month/lifetime, key day/month/lifetime
--             (hash: t, m = settled tokens and micros; ht, hm = reserved by open holds)
-- ARGV[1] "check" | "hold"; ARGV[2] estimate (micros); ARGV[3] estimated tokens; ARGV[4] hold TTL (ms)
-- ARGV[5] n, then n checks of 4 values: cell index (1..6), metric ("t" | "m"), limit, enforce ("1" | "0")
--
-- Replies: {"exists", "micros:tokens"} the request already holds; {"cold", idx...} absent keys
-- (0 = bal, 1..6 = cells: seed them from PostgreSQL and call again); otherwise
-- {verdict, balance, failed check (0 = none), then per check t, m, ht, hm} with verdict
-- "ok" | "funds" | "quota". With "hold" and "ok", the estimate is reserved and balance is after it.
local mode = ARGV[1]
if mode == "hold" then
  local held = redis.call("GET", KEYS[2])
  if held then
    return {"exists", held}
  end
end

local n = tonumber(ARGV[5])
local cold = {"cold"}
local bal = redis.call("GET", KEYS[1])
if not bal then
  cold[#cold + 1] = "0"
end
for i = 1, n do
  local idx = tonumber(ARGV[5 + 4 * (i - 1) + 1])
  if redis.call("EXISTS", KEYS[2 + idx]) == 0 then
    cold[#cold + 1] = tostring(idx)
  end
end
if #cold > 1 then
  return cold
end

local est_m = tonumber(ARGV[2])
local est_t = tonumber(ARGV[3])
local verdict = "ok"
local out = {"", bal, "0"}
if tonumber(bal) < est_m then
  verdict = "funds"
end
for i = 1, n do
  local base = 5 + 4 * (i - 1)
  local v = redis.call("HMGET", KEYS[2 + tonumber(ARGV[base + 1])], "t", "m", "ht", "hm")
  for j = 1, 4 do
    out[#out + 1] = v[j] or "0"
  end
  if verdict == "ok" and ARGV[base + 4] == "1" then
    local used, want
    if ARGV[base + 2] == "t" then
      used = tonumber(v[1] or "0") + tonumber(v[3] or "0")
      want = est_t
    else
      used = tonumber(v[2] or "0") + tonumber(v[4] or "0")
      want = est_m
    end
    if used + want > tonumber(ARGV[base + 3]) then
      verdict = "quota"
      out[3] = tostring(i)
    end
  end
end
out[1] = verdict

if verdict == "ok" and mode == "hold" then
  out[2] = redis.call("DECRBY", KEYS[1], ARGV[2])
  for c = 3, 8 do
    if redis.call("EXISTS", KEYS[c]) == 1 then
      redis.call("HINCRBY", KEYS[c], "ht", ARGV[3])
      redis.call("HINCRBY", KEYS[c], "hm", ARGV[2])
    end
  end
  redis.call("SET", KEYS[2], ARGV[2] .. ":" .. ARGV[3], "PX", ARGV[4])
end
return out
