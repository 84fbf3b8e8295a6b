-- wrk script: authenticated PUT of one variable with a small JSON body.
-- The token comes from the environment (BENCH_TOKEN); the URL given to wrk carries the path.
local token = os.getenv("BENCH_TOKEN")
if token == nil or token == "" then
  error("BENCH_TOKEN is not set")
end
wrk.method = "PUT"
wrk.body = '{"value":{"n":1,"s":"hello"}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token
