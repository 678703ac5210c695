-- wrk script: PUT of a random key out of BENCH_KEYS with a BENCH_VALUE_BYTES
-- body. Against a disk project every 200/201 is a durable (fsync'd) write.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench = dofile(dir .. "common.lua")

local requests = {}
local headers

function init(args)
  bench.seed()
  headers = bench.put_headers()
  if bench.prebuilt then
    for i = 0, bench.keys - 1 do
      requests[i + 1] = wrk.format("PUT", bench.path(i), headers, bench.value(i))
    end
  end
end

function request()
  if bench.prebuilt then
    return requests[math.random(#requests)]
  end
  local i = math.random(bench.keys) - 1
  return wrk.format("PUT", bench.path(i), headers, bench.value(i))
end
