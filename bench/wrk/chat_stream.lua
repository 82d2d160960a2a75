-- wrk script: streaming chat completion ("stream": true); wrk's latency is the time to the whole
-- stream (through data: [DONE]). Exact counts in done(). See common.lua.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua").install(true)
