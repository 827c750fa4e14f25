-- wrk script for bench/serve_load.sh: each request POSTs one question to /v1/solve, taken in
-- turn from the file QUESTIONS names (one per line); wrk's own summary counts non-2xx answers.
local qs = {}
local path = os.getenv("QUESTIONS")
for line in io.lines(path) do qs[#qs + 1] = line end
local i = 0
local function esc(s) return (s:gsub('\\', '\\\\'):gsub('"', '\\"')) end
request = function()
  i = i % #qs + 1
  return wrk.format("POST", "/v1/solve", {["Content-Type"] = "application/json"},
                    '{"questions": ["' .. esc(qs[i]) .. '"]}')
end
