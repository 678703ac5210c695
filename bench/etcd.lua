-- wrk script: etcd's JSON gateway (grpc-gateway over HTTP/1.1), the peer of
-- kvs's GET and PUT rows. BENCH_ETCD_OP picks the workload:
--   put      POST /v3/kv/put   {"key": <base64>, "value": <base64>} of a random
--            key out of BENCH_KEYS with a BENCH_VALUE_BYTES value (etcd answers
--            after its raft log entry is fsync'd: a durable write)
--   range    POST /v3/kv/range {"key": <base64>} of a random key: etcd's
--            default read, linearizable (a raft read index per request batch)
--   preload  the puts of every key in order, then again (run.sh stops wrk
--            once etcd counts BENCH_KEYS keys), with one thread (-t1)
-- Keys and values are the ones kvs gets (bench/k00042, "value of k00042 xx…"),
-- base64-encoded as the gateway wants, all prebuilt in init().
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench = dofile(dir .. "common.lua")

local op = os.getenv("BENCH_ETCD_OP") or "range"
local requests = {}
local next_key = 0

function init(args)
  bench.seed()
  local headers = { ["Content-Type"] = "application/json" }
  for i = 0, bench.keys - 1 do
    local key = bench.base64(bench.key(i))
    if op == "range" then
      requests[i + 1] = wrk.format("POST", "/v3/kv/range", headers, '{"key":"' .. key .. '"}')
    else
      local body = '{"key":"' .. key .. '","value":"' .. bench.base64(bench.value(i)) .. '"}'
      requests[i + 1] = wrk.format("POST", "/v3/kv/put", headers, body)
    end
  end
end

function request()
  if op == "preload" then
    local i = next_key
    next_key = (next_key + 1) % bench.keys
    return requests[i + 1]
  end
  return requests[math.random(#requests)]
end
