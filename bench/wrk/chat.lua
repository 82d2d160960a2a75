-- wrk script: non-streaming chat completion (~200-byte body), exact counts in done(). See common.lua.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua").install(false)
