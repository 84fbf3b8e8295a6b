-- wrk script: authenticated GET of one variable.
-- The token comes from the environment (BENCH_TOKEN); the URL given to wrk carries the path.
local token = os.getenv("BENCH_TOKEN")
if token == nil or token == "" then
  error("BENCH_TOKEN is not set")
end
wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer " .. token
