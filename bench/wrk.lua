-- The request bench/wrk.py has wrk send, configured by environment variables:
--   WRK_METHOD   GET or POST
--   WRK_HEADERS  "Name: value" lines, one header a line
--   WRK_BODY     the body (optional); every "{n}" in it becomes "<thread>-<count>", unique per
--                request of the run (a per-thread counter), for creates of distinct names
-- The path is the URL's given to wrk. Each thread counts the responses by status; `done` prints one line
--   WRK_RESULT {"requests": ..., "duration_us": ..., "statuses": {"201": ...}, "latency_us": {...}, ...}
-- that bench/wrk.py parses (wrk's own report is printed above it).

local method = os.getenv("WRK_METHOD") or "GET"
local body = os.getenv("WRK_BODY") or ""
local headers = {}
for line in (os.getenv("WRK_HEADERS") or ""):gmatch("[^\n]+") do
  local name, value = line:match("^([^:]+):%s*(.*)$")
  if name then headers[name] = value end
end

local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
  count = 0
end

if body:find("{n}", 1, true) then
  function request()
    count = count + 1
    local unique = body:gsub("{n}", id .. "-" .. count)
    return wrk.format(method, nil, headers, unique)
  end
else
  -- no request(): wrk sends these prebuilt bytes, its cheapest path
  wrk.method, wrk.body = method, (body ~= "" and body or nil)
  for name, value in pairs(headers) do wrk.headers[name] = value end
end

function response(status, response_headers, response_body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counted = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses") or {}) do
      counted[status] = (counted[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(counted) do
    table.insert(parts, string.format('"%d": %d', status, n))
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "threads": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"statuses": {%s}, "latency_us": {"p50": %d, "p90": %d, "p99": %d, "p999": %d, ' ..
    '"max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, summary.bytes, #threads,
    e.connect, e.read, e.write, e.status, e.timeout, table.concat(parts, ", "),
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
