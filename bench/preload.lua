-- wrk script: writes every key once, in order, then starts over. Run it with
-- one thread (-t1) so no key is skipped; run.sh stops wrk as soon as the
-- project reports BENCH_KEYS keys (a key whose write failed is simply
-- written again on the next pass).
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench = dofile(dir .. "common.lua")

local requests = {}
local next_key = 0

function init(args)
  local headers = bench.put_headers()
  for i = 0, bench.keys - 1 do
    requests[i + 1] = wrk.format("PUT", bench.path(i), headers, bench.value(i))
  end
end

function request()
  local i = next_key
  next_key = (next_key + 1) % bench.keys
  return requests[i + 1]
end
