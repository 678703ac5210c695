-- wrk script: GET of a random key out of BENCH_KEYS, with the bearer token.
-- Used for kvs and, unchanged, for the bare hyper peer (which ignores the
-- path and the header), so both see the same client.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench = dofile(dir .. "common.lua")

local requests = {}
local headers

function init(args)
  bench.seed()
  headers = bench.get_headers()
  if bench.prebuilt then
    for i = 0, bench.keys - 1 do
      requests[i + 1] = wrk.format("GET", bench.path(i), headers)
    end
  end
end

function request()
  if bench.prebuilt then
    return requests[math.random(#requests)]
  end
  local i = math.random(bench.keys) - 1
  return wrk.format("GET", bench.path(i), headers)
end
