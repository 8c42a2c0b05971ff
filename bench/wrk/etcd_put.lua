-- wrk script: durable single-key PUTs into etcd 3.4 through its JSON (grpc-gateway)
-- endpoint POST /v3/kv/put, body {"key": base64, "value": base64}, with a
-- 100-byte value and a distinct key per request. See bench/peers.sh.
local common = dofile((os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/common.lua")

local value_b64 = common.base64(common.filler(100))
local headers = { ["Content-Type"] = "application/json" }

function request()
  local key = common.next_key()
  local body = '{"key":"' .. common.base64(key) .. '","value":"' .. value_b64 .. '"}'
  return wrk.format("POST", "/v3/kv/put", headers, body)
end
