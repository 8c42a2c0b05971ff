-- Shared by the per-target wrk scripts in this folder. Each of them loads it
-- with dofile from $BENCH_WRK_DIR (set by bench/peers.sh), else from
-- bench/wrk relative to the working directory (the repository root).
--
-- Gives every request a distinct key (a per-thread prefix plus a counter) and
-- counts responses by status so a run that measured errors is visible: the
-- done() hook prints a line
--   BENCH_STATUS total=N ok=N non2xx=N socket_errors=N
-- that bench/peers.sh parses (wrk's own "Non-2xx or 3xx responses" line lets
-- 3xx through and is missing when there are none).

local common = {}

local threads = {}
local thread_counter = 0

-- setup() runs once per thread in the main Lua state, before the threads start.
function setup(thread)
  thread_counter = thread_counter + 1
  thread:set("thread_id", thread_counter)
  -- A per-run tag keeps keys distinct across rounds against the same server.
  thread:set("run_tag", os.getenv("BENCH_RUN_TAG") or tostring(os.time()))
  table.insert(threads, thread)
end

-- The rest runs inside each thread's own Lua state.
counter = 0
ok = 0
non2xx = 0

function common.next_key()
  counter = counter + 1
  return string.format("bench-%s-t%d-%d", run_tag or "x", thread_id or 0, counter)
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
  else
    non2xx = non2xx + 1
    if non2xx <= 3 then
      io.stderr:write(string.format("non-2xx response: %d %s\n", status, tostring(body):sub(1, 200)))
    end
  end
end

function done(summary, latency, requests)
  local total_ok, total_bad = 0, 0
  for _, t in ipairs(threads) do
    total_ok = total_ok + (t:get("ok") or 0)
    total_bad = total_bad + (t:get("non2xx") or 0)
  end
  local e = summary.errors
  local socket_errors = e.connect + e.read + e.write + e.timeout
  io.write(string.format("BENCH_STATUS total=%d ok=%d non2xx=%d socket_errors=%d\n",
    total_ok + total_bad, total_ok, total_bad, socket_errors))
end

-- A value of exactly `n` bytes made of printable ASCII.
function common.filler(n)
  return string.rep("x", n)
end

local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

-- Standard base64 with padding (what etcd's JSON gateway expects for bytes).
function common.base64(data)
  local out = {}
  for i = 1, #data, 3 do
    local a, b, c = data:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1 = math.floor(n / 262144) % 64
    local c2 = math.floor(n / 4096) % 64
    local c3 = math.floor(n / 64) % 64
    local c4 = n % 64
    out[#out + 1] = b64chars:sub(c1 + 1, c1 + 1) .. b64chars:sub(c2 + 1, c2 + 1)
      .. (b and b64chars:sub(c3 + 1, c3 + 1) or "=")
      .. (c and b64chars:sub(c4 + 1, c4 + 1) or "=")
  end
  return table.concat(out)
end

return common
