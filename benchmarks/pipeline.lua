-- wrk script for scenario H1: pipeline N plaintext requests per write.
--
--   wrk -t1 -c100 -d2s -s benchmarks/pipeline.lua http://127.0.0.1:8080/plaintext -- 16
--
-- N is the first script argument (default 16).  wrk counts every response, so
-- Requests/sec is responses per second.  Its latency numbers are per pipelined
-- batch and not meaningful here; the runner does not report them.

local req

function init(args)
   local depth = tonumber(args[1]) or 16
   local r = {}
   for i = 1, depth do
      r[i] = wrk.format("GET", "/plaintext")
   end
   req = table.concat(r)
end

function request()
   return req
end
