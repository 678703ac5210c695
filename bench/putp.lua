dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "put.lua")
function done(summary, latency, requests)
  local out = {}
  for _, p in ipairs({50, 90, 95, 97, 98, 99, 99.5, 99.9}) do
    out[#out + 1] = string.format("p%s=%.1fms", p, latency:percentile(p) / 1000)
  end
  io.write("PCT ", table.concat(out, " "), string.format(" n=%d\n", summary.requests))
end
