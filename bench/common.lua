-- Shared by the wrk scripts in bench/ (get.lua, put.lua, txn.lua, cas.lua,
-- preload.lua).
--
-- Settings come from the environment that bench/run.sh sets:
--   BENCH_PROJECT      project id                  (default "bench")
--   BENCH_TOKEN        a write token of it         (default none)
--   BENCH_KEYS         number of keys              (default 10000)
--   BENCH_VALUE_BYTES  size of each value in bytes (default 100)
--   BENCH_KEY_DIGITS   digits of the key number    (default 5: bench/k00042;
--                      size.sh uses 8 for up to 100,000,000 keys)
--   BENCH_PREBUILT     0 = format each request in request() instead of
--                      prebuilding one per key in init() (size.sh: 10,000,000
--                      prebuilt requests would not fit in wrk's memory)
--
-- Each script builds all its requests once per wrk thread in init(), so
-- request() only picks a prebuilt string: the Lua cost per request is the
-- same for kvs and for the bare hyper peer, and small.
--
-- done() prints one line that run.sh parses:
--   BENCH_RESULT requests=N duration_us=D rps=R p50_us=.. p99_us=.. ...
-- (plus status_412=.. status_2xx=.. from a script that counts them)

local M = {}

M.project = os.getenv("BENCH_PROJECT") or "bench"
M.token = os.getenv("BENCH_TOKEN") or ""
M.keys = tonumber(os.getenv("BENCH_KEYS") or "10000")
M.value_bytes = tonumber(os.getenv("BENCH_VALUE_BYTES") or "100")
M.key_digits = tonumber(os.getenv("BENCH_KEY_DIGITS") or "5")
M.prebuilt = os.getenv("BENCH_PREBUILT") ~= "0"
local number = "%0" .. M.key_digits .. "d"

-- The name of key i (0 <= i < keys): bench/k00000 .. bench/k09999.
function M.key(i)
  return string.format("bench/k" .. number, i)
end

-- Its path.
function M.path(i)
  return string.format("/v1/projects/%s/kv/%s", M.project, M.key(i))
end

-- A value of exactly value_bytes bytes that names its key.
function M.value(i)
  local head = string.format("value of k" .. number .. " ", i)
  if #head >= M.value_bytes then
    return string.sub(head, 1, M.value_bytes)
  end
  return head .. string.rep("x", M.value_bytes - #head)
end

function M.get_headers()
  return { ["Authorization"] = "Bearer " .. M.token }
end

function M.put_headers()
  return {
    ["Authorization"] = "Bearer " .. M.token,
    ["Content-Type"] = "application/octet-stream",
  }
end

-- Base64 (RFC 4648, with padding) of a string: etcd's JSON gateway takes
-- keys and values so.
local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
function M.base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local d1, d2 = math.floor(n / 262144) % 64, math.floor(n / 4096) % 64
    local d3, d4 = math.floor(n / 64) % 64, n % 64
    out[#out + 1] = alphabet:sub(d1 + 1, d1 + 1) .. alphabet:sub(d2 + 1, d2 + 1)
      .. (b and alphabet:sub(d3 + 1, d3 + 1) or "=") .. (c and alphabet:sub(d4 + 1, d4 + 1) or "=")
  end
  return table.concat(out)
end

-- Seeds this thread's random keys differently from the other threads'.
function M.seed()
  local id = tonumber(thread_id) or 0 -- set by setup() below
  math.randomseed(os.time() + 7919 * id)
  for _ = 1, 10 do
    math.random()
  end
end

-- wrk calls setup() in its main Lua state once per thread, before init().
local threads = {}
function setup(thread)
  threads[#threads + 1] = thread
  thread:set("thread_id", #threads)
end

-- A counter that a script keeps in its threads (a global there), summed over
-- the threads, or nil if the script keeps none.
local function thread_sum(name)
  local sum
  for _, thread in ipairs(threads) do
    local n = thread:get(name)
    if type(n) == "number" then
      sum = (sum or 0) + n
    end
  end
  return sum
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d "
      .. "mean_us=%.1f max_us=%d err_connect=%d err_read=%d err_write=%d err_status=%d "
      .. "err_timeout=%d",
    summary.requests, summary.duration, summary.requests / seconds,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
  -- Scripts that count answers by status (cas.lua) add them; a 412 is also
  -- in err_status, as wrk counts every status >= 400 there.
  local s412, s2xx = thread_sum("count_412"), thread_sum("count_2xx")
  if s412 then
    io.write(string.format(" status_412=%d status_2xx=%d", s412, s2xx or 0))
  end
  io.write("\n")
end

return M
