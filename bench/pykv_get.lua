-- wrk script: Simple-PyKV's GET /api/v1/projects/<id>/store/<key> of a random
-- key out of BENCH_KEYS, with the token in X-API-Key as Simple-PyKV clients
-- send it. The answer is the envelope with the value and its metadata.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench = dofile(dir .. "common.lua")

local requests = {}

function init(args)
  bench.seed()
  local headers = { ["X-API-Key"] = bench.token }
  for i = 0, bench.keys - 1 do
    local path = string.format("/api/v1/projects/%s/store/%s", bench.project, (bench.key(i):gsub("/", "%%2F")))
    requests[i + 1] = wrk.format("GET", path, headers)
  end
end

function request()
  return requests[math.random(#requests)]
end
