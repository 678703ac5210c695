-- wrk script: compare-and-set, PUT with If-Match of the version last seen.
--
-- Each wrk thread owns the keys i with i % BENCH_WRK_THREADS == its number
-- (so no other thread writes them) and remembers the version of each: first
-- from BENCH_CAS_VERSIONS (lines "index version", from a listing that run.sh
-- takes just before the run), then from every successful answer (its body
-- names the key and the new version). Each request is
--   PUT /v1/projects/<p>/kv/bench/kNNNNN  If-Match: "<remembered version>"
-- of a random owned key with a BENCH_VALUE_BYTES body. Two connections of
-- one thread that pick the same key at the same time race: one wins, the
-- other gets 412 and the winner's answer refreshes the version. So a 412 is
-- a real lost race, never a stale client; they are counted (count_412), and
-- requests/s counts them too.
--
-- Unlike put.lua, request() builds each request (the If-Match header
-- changes) and response() parses each answer: more client CPU per request.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench = dofile(dir .. "common.lua")

local owned = {}
local version = {}
local paths = {}
local values = {}
local headers

count_2xx = 0
count_412 = 0

function init(args)
  bench.seed()
  local threads = tonumber(os.getenv("BENCH_WRK_THREADS") or "1")
  local me = (tonumber(thread_id) or 1) - 1
  local file = assert(io.open(assert(os.getenv("BENCH_CAS_VERSIONS"), "BENCH_CAS_VERSIONS unset"), "r"))
  for line in file:lines() do
    local i, v = line:match("^(%d+) (%d+)$")
    if i then
      version[tonumber(i)] = v
    end
  end
  file:close()
  for i = 0, bench.keys - 1 do
    if i % threads == me and version[i] then
      owned[#owned + 1] = i
      paths[i] = bench.path(i)
      values[i] = bench.value(i)
    end
  end
  assert(#owned > 0, "cas.lua: no versions for this thread's keys")
  headers = bench.put_headers()
end

function request()
  local i = owned[math.random(#owned)]
  headers["If-Match"] = '"' .. version[i] .. '"'
  return wrk.format("PUT", paths[i], headers, values[i])
end

function response(status, headers, body)
  if status == 412 then
    count_412 = count_412 + 1
  elseif status >= 200 and status < 300 then
    count_2xx = count_2xx + 1
    local i = body:match('"key":"bench/k(%d+)"')
    local v = body:match('"version":(%d+)')
    if i and v then
      version[tonumber(i)] = v
    end
  end
end
