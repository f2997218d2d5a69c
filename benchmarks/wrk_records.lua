-- wrk script for the benchmarks (benchmarks/harness.py): every request is a different one.
--
--   wrk -t2 -c16 -d5s -s benchmarks/wrk_records.lua http://127.0.0.1:PORT -- FILE EXPECT 2 [wrap]
--
-- FILE holds complete HTTP requests, each as "<byte count>\n<request bytes>".
-- wrk thread i of n sends records i, i+n, i+2n ... in order, so no two
-- requests of a run are the same record. A thread that runs out stops (and
-- says so in the summary) unless "wrap" is given, when it starts over.
-- EXPECT is the HTTP status every answer must have; others are counted.
-- The third argument is wrk's -t (how many threads share the file).
-- done() prints one JSON line, prefixed "WRK-RESULT ", for the caller.

local threads = {}
local counter = 0

function setup(thread)
   thread:set("index", counter)
   table.insert(threads, thread)
   counter = counter + 1
end

function init(args)
   local path, expect, nthreads, mode = args[1], tonumber(args[2]), tonumber(args[3]), args[4]
   local handle = assert(io.open(path, "rb"))
   local data = handle:read("*a")
   handle:close()
   records = {}
   local position, number = 1, 0
   while position <= #data do
      local newline = string.find(data, "\n", position, true)
      local size = tonumber(string.sub(data, position, newline - 1))
      if number % nthreads == index then
         table.insert(records, string.sub(data, newline + 1, newline + size))
      end
      number = number + 1
      position = newline + 1 + size
   end
   nrecords = #records
   cursor = 0
   sent = 0
   expected = expect
   unexpected = 0
   exhausted = 0
   wrap = mode == "wrap"
end

function request()
   cursor = cursor + 1
   if cursor > #records then
      if wrap and #records > 0 then
         cursor = 1
      else
         exhausted = 1
         wrk.thread:stop()
         cursor = #records
      end
   end
   sent = sent + 1
   return records[cursor]
end

function response(status, headers, body)
   if status ~= expected then
      unexpected = unexpected + 1
      if unexpected <= 3 then
         io.stderr:write("unexpected " .. status .. ": " .. string.sub(body or "", 1, 300) .. "\n")
      end
   end
end

function done(summary, latency, requests)
   local unexpected_total, exhausted_total, records_total = 0, 0, 0
   for _, thread in ipairs(threads) do
      unexpected_total = unexpected_total + thread:get("unexpected")
      exhausted_total = exhausted_total + thread:get("exhausted")
      records_total = records_total + thread:get("nrecords")
   end
   local errors = summary.errors
   io.write(string.format(
      'WRK-RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
         .. '"unexpected": %d, "exhausted_threads": %d, "records": %d, '
         .. '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      unexpected_total, exhausted_total, records_total,
      errors.connect, errors.read, errors.write, errors.status, errors.timeout))
end
