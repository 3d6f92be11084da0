-- Sends DEPTH pipelined GET /plaintext requests per write (wrk counts each response).
-- Usage: wrk -s bench/wrk/pipeline.lua URL -- DEPTH
local depth = 16
local payload

init = function(args)
  depth = tonumber(args[1]) or 16
  local r = {}
  for i = 1, depth do
    r[i] = wrk.format("GET", "/plaintext")
  end
  payload = table.concat(r)
end

request = function()
  return payload
end
