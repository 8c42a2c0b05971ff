-- wrk script: single-key PUTs in Meridian's client API shape,
-- PUT /v1/kv/default/<key> with a JSON string as the body, 100 bytes in all
-- (two quotes and 98 characters), a distinct key per request. Used against
-- Meridian and against the bare axum handler (crates/server/examples/bare_kv.rs).
-- See bench/peers.sh.
local common = dofile((os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/common.lua")

local body = '"' .. common.filler(98) .. '"'
assert(#body == 100, "body must be 100 bytes")
local headers = { ["Content-Type"] = "application/json" }

function request()
  return wrk.format("PUT", "/v1/kv/default/" .. common.next_key(), headers, body)
end
