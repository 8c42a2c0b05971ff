-- wrk script: GETs of keys a preload wrote, in Meridian's client API shape
-- (GET /v1/kv/default/<key>), against Meridian or the bare handler.
-- The preload is kv_put.lua run with BENCH_RUN_TAG=$BENCH_PRELOAD_TAG and
-- one wrk thread, so its keys are bench-<tag>-t1-1 .. bench-<tag>-t1-<n>;
-- this script picks among the first BENCH_KEYS of them uniformly.
-- BENCH_PUT_PERCENT (default 0) of requests are 100-byte PUTs of new keys
-- instead (the 90/10 mix: BENCH_PUT_PERCENT=10). See bench/reads.sh.
local common = dofile((os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/common.lua")

local tag = os.getenv("BENCH_PRELOAD_TAG") or "preload"
local keys = tonumber(os.getenv("BENCH_KEYS") or "100000")
local put_percent = tonumber(os.getenv("BENCH_PUT_PERCENT") or "0")
local body = '"' .. common.filler(98) .. '"'
local headers = { ["Content-Type"] = "application/json" }

function init(args)
  math.randomseed(os.time() + (thread_id or 0))
end

function request()
  if put_percent > 0 and math.random(100) <= put_percent then
    return wrk.format("PUT", "/v1/kv/default/" .. common.next_key(), headers, body)
  end
  -- From 2: wrk builds (and drops) one request per thread before it
  -- starts, so the preload never sent its first key.
  local i = math.random(2, keys)
  return wrk.format("GET", string.format("/v1/kv/default/bench-%s-t1-%d", tag, i))
end
