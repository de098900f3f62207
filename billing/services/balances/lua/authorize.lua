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
-- then nl rate limits (limits.py): nl, then per limit kind ("r" | "t" | "p"), limit, cost;
-- KEYS[9 .. 8+nl] their buckets (hash lv, ts, lim) or slot sets (zset request_id -> expiry ms);
-- last, the slot lifetime in ms (the hold's TTL).
--
-- Replies: {"exists", "micros:tokens"} the request already holds; {"cold", idx...} absent keys
-- (0 = bal, 1..6 = cells: seed them from PostgreSQL and call again); otherwise
-- {verdict, balance, failed check or limit (0 = none), then per check t, m, ht, hm, then per
-- limit remaining, reset ms, retry ms} with verdict "ok" | "funds" | "quota" | "rate". Money is
-- judged first (a request refused for money consumes no rate); with "ok" the limits are taken
-- (requests and tokens always, a slot only with "hold"), and with "hold" the estimate is
-- reserved and balance is after it. Rate state needs no seeding: an absent bucket is empty.
--
-- Many admissions of one tenant in one call (the relay's group commit): ARGV[1] "many",
-- ARGV[2] count, then per admission its key count and argument count, then every admission's
-- arguments in order; KEYS are every admission's keys in order. Each is admitted as if called
-- alone, one after the other (a later one sees the earlier ones' holds); the reply is the list
-- of their replies.
local function admit(KEYS, ARGV)
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

  local lbase = 5 + 4 * n + 1
  local nl = tonumber(ARGV[lbase] or "0")
  local slot_ttl = tonumber(ARGV[lbase + 3 * nl + 1] or "0")
  local limit_out = {}
  local writes = {}
  if nl > 0 then
    local t = redis.call("TIME")
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    for i = 1, nl do
      local kind = ARGV[lbase + 3 * (i - 1) + 1]
      local lim = tonumber(ARGV[lbase + 3 * (i - 1) + 2])
      local cost = tonumber(ARGV[lbase + 3 * (i - 1) + 3])
      local key = KEYS[8 + i]
      local remaining, reset, retry = 0, 0, 0
      if kind == "p" then
        redis.call("ZREMRANGEBYSCORE", key, "-inf", now)
        local used = redis.call("ZCARD", key)
        local oldest = redis.call("ZRANGE", key, 0, 0, "WITHSCORES")
        if oldest[2] then
          reset = math.max(tonumber(oldest[2]) - now, 0)
        end
        if used + cost > lim then
          remaining = math.max(lim - used, 0)
          retry = math.max(reset, 1)
        else
          remaining = lim - used - cost
          if mode == "hold" then
            writes[#writes + 1] = {"p", key}
          end
        end
      else
        local h = redis.call("HMGET", key, "lv", "ts")
        local level = tonumber(h[1] or "0")
        local since = tonumber(h[2] or tostring(now))
        level = math.max(level - math.max(now - since, 0) * lim / 60000, 0)
        if level + cost > lim then
          remaining = math.max(math.floor(lim - level), 0)
          reset = math.ceil(level * 60000 / lim)
          retry = math.max(math.ceil((level + cost - lim) * 60000 / lim), 1)
          if cost > lim then
            retry = 60000
          end
        else
          remaining = math.floor(lim - level - cost)
          reset = math.ceil((level + cost) * 60000 / lim)
          writes[#writes + 1] = {"b", key, level + cost, reset, lim}
        end
      end
      if retry > 0 and verdict == "ok" then
        verdict = "rate"
        out[3] = tostring(i)
      end
      limit_out[#limit_out + 1] = tostring(remaining)
      limit_out[#limit_out + 1] = tostring(reset)
      limit_out[#limit_out + 1] = tostring(retry)
    end
    if verdict == "ok" then
      for _, w in ipairs(writes) do
        if w[1] == "b" then
          redis.call("HSET", w[2], "lv", tostring(w[3]), "ts", tostring(now), "lim", tostring(w[5]))
          redis.call("PEXPIRE", w[2], w[4] + 1000)
        else
          redis.call("ZADD", w[2], now + slot_ttl, KEYS[2])  -- member: the hold key
          redis.call("PEXPIRE", w[2], slot_ttl + 60000)
        end
      end
    end
  end
  for _, v in ipairs(limit_out) do
    out[#out + 1] = v
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
end

if ARGV[1] == "many" then
  local count = tonumber(ARGV[2])
  local kpos, apos = 1, 3 + 2 * count
  local replies = {}
  for i = 1, count do
    local nk, na = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
    local k, a = {}, {}
    for j = 1, nk do
      k[j] = KEYS[kpos + j - 1]
    end
    for j = 1, na do
      a[j] = ARGV[apos + j - 1]
    end
    kpos, apos = kpos + nk, apos + na
    replies[i] = admit(k, a)
  end
  return replies
end
return admit(KEYS, ARGV)
