-- wrk script for bench/enqueue.sh: POST /v1/jobs with a small webhook job.
--
--   wrk -t2 -c64 -d10s -s bench/enqueue.lua http://127.0.0.1:PORT -- MODE RUN_ID
--
-- MODE:   plain  no Idempotency-Key header
--         idem   a unique Idempotency-Key on every request (run id, thread id, counter)
-- RUN_ID: keeps keys unique across runs against the same Redis namespace.
-- The bearer secret comes from the environment (BENCH_API_KEY), never from the command line.
-- Every answer outside 2xx is counted, by status, and reported by done() in lines that
-- bench/enqueue.sh reads: "bench: responses=N ok=N non2xx=N statuses=CODE:N,...".

local threads = {}
local next_id = 0

function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

local body = '{"kind":"webhook","payload":{"url":"https://example.org/hook","event":"bench.ping","data":{"n":1}}}'

function init(args)
   mode = args[1] or "plain"
   run_id = args[2] or tostring(os.time())
   counter = 0
   responses = 0
   ok = 0
   non2xx = 0
   statuses = ""          -- "code:count," pairs; a string so done() can read it across threads
   by_status = {}

   local key = os.getenv("BENCH_API_KEY")
   if key == nil or key == "" then
      error("BENCH_API_KEY is not set")
   end
   wrk.method = "POST"
   wrk.path = "/v1/jobs"
   wrk.body = body
   wrk.headers["Content-Type"] = "application/json"
   wrk.headers["Authorization"] = "Bearer " .. key
   if mode == "plain" then
      fixed = wrk.format()
   elseif mode ~= "idem" then
      error("mode must be plain or idem, not " .. mode)
   end
end

function request()
   if mode == "plain" then
      return fixed
   end
   counter = counter + 1
   wrk.headers["Idempotency-Key"] = string.format("bench-%s-t%d-%d", run_id, id, counter)
   return wrk.format()
end

function response(status, headers, body)
   responses = responses + 1
   if status >= 200 and status < 300 then
      ok = ok + 1
   else
      non2xx = non2xx + 1
      by_status[status] = (by_status[status] or 0) + 1
      local parts = {}
      for code, n in pairs(by_status) do
         table.insert(parts, code .. ":" .. n)
      end
      statuses = table.concat(parts, ",")
   end
end

function done(summary, latency, requests)
   local total_responses, total_ok, total_non2xx = 0, 0, 0
   local merged = {}
   for _, thread in ipairs(threads) do
      total_responses = total_responses + (thread:get("responses") or 0)
      total_ok = total_ok + (thread:get("ok") or 0)
      total_non2xx = total_non2xx + (thread:get("non2xx") or 0)
      local s = thread:get("statuses") or ""
      for code, n in string.gmatch(s, "(%d+):(%d+)") do
         merged[code] = (merged[code] or 0) + tonumber(n)
      end
   end
   local parts = {}
   for code, n in pairs(merged) do
      table.insert(parts, code .. ":" .. n)
   end
   table.sort(parts)
   local e = summary.errors
   io.write(string.format(
      "bench: responses=%d ok=%d non2xx=%d statuses=%s socket_errors=connect:%d,read:%d,write:%d,timeout:%d p50_ms=%.2f p99_ms=%.2f\n",
      total_responses, total_ok, total_non2xx, (#parts > 0) and table.concat(parts, ",") or "-",
      e.connect, e.read, e.write, e.timeout,
      latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
