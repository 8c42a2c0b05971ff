-- wrk script: single-key PUTs in Meridian's client API shape,
-- PUT /v1/kv/default/<key> with a JSON string as the body, 100 bytes in all
-- (two quotes and 98 characters), a distinct key per request. Used against
-- Meridian and against the bare axum handler (crates/server/examples/bare_kv.rs).
-- See bench/peers.sh.
local common = dofile((os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/common.lua")

-- BENCH_VALUE_BYTES (default 100) sets the body size, quotes included.
local size = tonumber(os.getenv("BENCH_VALUE_BYTES") or "100")
local body = '"' .. common.filler(size - 2) .. '"'
assert(#body == size, "body must be " .. size .. " bytes")
local headers = { ["Content-Type"] = "application/json" }

function request()
  return wrk.format("PUT", "/v1/kv/default/" .. common.next_key(), headers, body)
end
