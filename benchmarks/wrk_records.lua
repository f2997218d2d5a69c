-- wrk script for the benchmarks (benchmarks/harness.py): every request is a different one.
--
--   wrk -t2 -c16 -d5s -s benchmarks/wrk_records.lua http://127.0.0.1:PORT -- FILE EXPECT 2 [MODE [BODY]]
--
-- FILE holds complete HTTP requests, each as "<byte count>\n<request bytes>".
-- wrk thread i of n sends records i, i+n, i+2n ... in order, so no two
-- requests of a run are the same record. A thread that runs out stops (and
-- says so in the summary: "exhausted_threads") unless MODE is "wrap", when
-- it starts over ("once", the default, for no wrapping). Until the thread
-- has stopped, a connection that asks for a request after the last record
-- gets a filler (GET /bench/bare?exhausted=1), never a record again; an
-- answer to a filler is neither counted nor checked.
-- EXPECT is the HTTP status every answer must have, BODY (optional) a
-- string every answer's body must contain (e.g. "valid":true); answers
-- with another status or without BODY are counted as "unexpected", and
-- only the expected ones as "ok".
-- The third argument is wrk's -t (how many threads share the file).
-- done() prints one JSON line, prefixed "WRK-RESULT ", for the caller:
-- "requests" counts every answer to a record, "ok" the expected ones,
-- "sent" the records handed to wrk (answered or not when it stopped).

local threads = {}
local counter = 0
local FILLER = "GET /bench/bare?exhausted=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
local FILLER_BODY = '{"ok": true}'

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
   expected_body = args[5]
   if expected_body == "" then
      expected_body = nil
   end
   unexpected = 0
   ok = 0
   fillers = 0
   exhausted = 0
   wrap = mode == "wrap"
end

function request()
   cursor = cursor + 1
   if cursor > #records then
      if wrap and #records > 0 then
         cursor = 1
      else
         -- Out of records: stop this thread, and send whoever asks until
         -- it has stopped a harmless request that is not counted.
         exhausted = 1
         wrk.thread:stop()
         cursor = #records
         return FILLER
      end
   end
   sent = sent + 1
   return records[cursor]
end

function response(status, headers, body)
   if exhausted == 1 and status == 200 and body == FILLER_BODY then
      fillers = fillers + 1
      return
   end
   local problem = nil
   if status ~= expected then
      problem = "status " .. status
   elseif expected_body and not string.find(body or "", expected_body, 1, true) then
      problem = "body without " .. expected_body .. " (status " .. status .. ")"
   end
   if problem then
      unexpected = unexpected + 1
      if unexpected <= 3 then
         io.stderr:write("unexpected " .. problem .. ": " .. string.sub(body or "", 1, 300) .. "\n")
      end
   else
      ok = ok + 1
   end
end

function done(summary, latency, requests)
   local unexpected_total, exhausted_total, records_total = 0, 0, 0
   local ok_total, fillers_total, sent_total = 0, 0, 0
   for _, thread in ipairs(threads) do
      unexpected_total = unexpected_total + thread:get("unexpected")
      exhausted_total = exhausted_total + thread:get("exhausted")
      records_total = records_total + thread:get("nrecords")
      ok_total = ok_total + thread:get("ok")
      fillers_total = fillers_total + thread:get("fillers")
      sent_total = sent_total + thread:get("sent")
   end
   local errors = summary.errors
   io.write(string.format(
      'WRK-RESULT {"requests": %d, "ok": %d, "sent": %d, "fillers": %d, "duration_us": %d, '
         .. '"p50_us": %d, "p99_us": %d, '
         .. '"unexpected": %d, "exhausted_threads": %d, "records": %d, '
         .. '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\n',
      summary.requests - fillers_total, ok_total, sent_total, fillers_total, summary.duration,
      latency:percentile(50), latency:percentile(99),
      unexpected_total, exhausted_total, records_total,
      errors.connect, errors.read, errors.write, errors.status, errors.timeout))
end
