-- bench/apps/wrk_ids.lua - wrk request generator for workload 7: GET <BENCH_PATH><key>, keys pseudo-random in 1..BENCH_ROWS.
local rows = tonumber(os.getenv("BENCH_ROWS") or "1000")
local prefix = os.getenv("BENCH_PATH") or "/one/"
math.randomseed(4)

request = function()
  return wrk.format("GET", prefix .. math.random(1, rows))
end
