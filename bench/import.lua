-- wrk script: preloads BENCH_KEYS keys through the import endpoint, in
-- chunks of BENCH_IMPORT_CHUNK keys (default 2000, about 250 KB a body):
--   POST /v1/projects/<p>/import {"keys": [{"key": "bench/k…", "value": "…"}, …]}
-- Each chunk is one durable commit. Thread t of T (BENCH_WRK_THREADS) sends
-- chunks t-1, t-1+T, …, then starts over; size.sh stops wrk as soon as the
-- project counts BENCH_KEYS keys (a chunk sent twice only overwrites its keys
-- with the same values). Each body is built in request(), not prebuilt: at
-- 10,000,000 keys the bodies would not fit in wrk's memory.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench = dofile(dir .. "common.lua")

local chunk = tonumber(os.getenv("BENCH_IMPORT_CHUNK") or "2000")
local threads = tonumber(os.getenv("BENCH_WRK_THREADS") or "1")
local chunks = math.ceil(bench.keys / chunk)
local path = string.format("/v1/projects/%s/import", bench.project)
local headers
local next_chunk

function init(args)
  headers = {
    ["Authorization"] = "Bearer " .. bench.token,
    ["Content-Type"] = "application/json",
  }
  next_chunk = (tonumber(thread_id) or 1) - 1
end

function request()
  local c = next_chunk
  next_chunk = next_chunk + threads
  if next_chunk >= chunks then
    next_chunk = ((tonumber(thread_id) or 1) - 1) % chunks
  end
  local first = c * chunk
  local last = math.min(first + chunk, bench.keys) - 1
  local items = {}
  for i = first, last do
    -- Keys and values are plain ASCII: nothing to escape.
    items[#items + 1] = '{"key":"' .. bench.key(i) .. '","value":"' .. bench.value(i) .. '"}'
  end
  return wrk.format("POST", path, headers, '{"keys":[' .. table.concat(items, ",") .. "]}")
end
