-- wrk script for benches/compare.sh: adds nothing to the requests (so wrk keeps its one
-- prebuilt request) and, at the end, prints the run's totals as one JSON line starting with
-- `{`, so the script reads numbers rather than wrk's rounded, unit-suffixed text.
function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      '{"requests":%d,"bytes":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
      '"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
      summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write,
      e.status, e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
