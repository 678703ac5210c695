-- wrk script: a transaction of 5 puts. Each request is
--   POST /v1/projects/<p>/txn {"ops": [5 x {"op":"put","key":..,"value":".."}]}
-- to 5 distinct random keys out of BENCH_KEYS, each value BENCH_VALUE_BYTES
-- bytes (sent as a JSON string, so stored as text/plain; charset=utf-8).
-- Against a disk project every 200 is one durable (fsync'd) commit of all 5
-- keys at one revision. keys/s = 5 x requests/s.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench = dofile(dir .. "common.lua")

local PUTS = 5
-- Distinct transactions prebuilt per wrk thread; request() picks one.
local PREBUILT = 4000

local requests = {}

function init(args)
  bench.seed()
  local headers = {
    ["Authorization"] = "Bearer " .. bench.token,
    ["Content-Type"] = "application/json",
  }
  local path = string.format("/v1/projects/%s/txn", bench.project)
  for r = 1, PREBUILT do
    local chosen, ops = {}, {}
    while #ops < PUTS do
      local i = math.random(bench.keys) - 1
      if not chosen[i] then
        chosen[i] = true
        -- Keys and values are plain ASCII: nothing to escape.
        ops[#ops + 1] = string.format('{"op":"put","key":"%s","value":"%s"}', bench.key(i), bench.value(i))
      end
    end
    requests[r] = wrk.format("POST", path, headers, '{"ops":[' .. table.concat(ops, ",") .. "]}")
  end
end

function request()
  return requests[math.random(#requests)]
end
