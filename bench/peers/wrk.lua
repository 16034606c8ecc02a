-- wrk script for bench/peers/run.sh: POSTs the file $PEERS_BODY as JSON (with
-- "Authorization: Bearer $PEERS_AUTH" when that is set) and ends with one machine-readable line.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("PEERS_AUTH")
if auth and auth ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. auth
end
local path = os.getenv("PEERS_BODY")
if path and path ~= "" then
  local f = assert(io.open(path, "rb"))
  wrk.body = f:read("*a")
  f:close()
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "PEERS {\"requests\":%d,\"duration_us\":%d,\"non2xx\":%d,\"socket_errors\":%d," ..
    "\"p50_us\":%d,\"p90_us\":%d,\"p99_us\":%d,\"max_us\":%d,\"mean_us\":%.1f}\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
