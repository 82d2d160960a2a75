-- Shared by chat.lua and chat_stream.lua (loaded with dofile; wrk gives each thread its own Lua state).
--
-- Environment (read once per thread):
--   BENCH_KEY    bearer key sent in Authorization (default "sk-bench"); several keys separated by commas
--                are used in turn, one request each (several users: bench/run.py --users N)
--   BENCH_MODEL  model name (default "gpt-4o-mini")
--   BENCH_PATH   request path (default "/v1/chat/completions")
--   BENCH_VARY   "1": a distinct user message per request ("… #<thread>-<n>"), so every request opens
--                its own conversation (SynapGate derives the conversation id from the opening messages)
--
-- Every request is counted in request() and every answer in response(), per status code, and done()
-- prints one line `BENCH_RESULT {json}` with the totals over all threads (thread:get copies each
-- thread's counters out of its Lua state) and wrk's own latency percentiles in microseconds, so
-- bench/run.py gets exact counts instead of wrk's rounded text.

local M = {}

local threads = {}

local function body_for(stream, suffix)
  local model = os.getenv("BENCH_MODEL") or "gpt-4o-mini"
  -- About 200 bytes: a system and a user message, a small max_tokens.
  local b = '{"model":"' .. model .. '","messages":[{"role":"system","content":"You are a concise assistant."},'
    .. '{"role":"user","content":"Give me one short sentence about latency budgets in API gateways.'
    .. (suffix or "") .. '"}],'
    .. '"max_tokens":32'
  if stream then
    b = b .. ',"stream":true'
  end
  return b .. '}'
end

function M.install(stream)
  function setup(thread)
    thread:set("tid", #threads + 1)
    table.insert(threads, thread)
  end

  function init(args)
    sent = 0
    responses = 0
    bad_body = 0
    statuses = {}
    local path = os.getenv("BENCH_PATH") or "/v1/chat/completions"
    vary = os.getenv("BENCH_VARY") == "1"
    req_path = path
    reqs, req_headers = {}, {}
    for key in string.gmatch(os.getenv("BENCH_KEY") or "sk-bench", "[^,]+") do
      local headers = {
        ["Content-Type"] = "application/json",
        ["Authorization"] = "Bearer " .. key,
      }
      if stream then
        headers["Accept"] = "text/event-stream"
      end
      table.insert(req_headers, headers)
      table.insert(reqs, wrk.format("POST", path, headers, body_for(stream)))
    end
  end

  function request()
    sent = sent + 1
    local i = ((sent + tid) % #reqs) + 1  -- the keys in turn (threads start at different keys)
    if vary then
      return wrk.format("POST", req_path, req_headers[i], body_for(stream, " #" .. tid .. "-" .. sent))
    end
    return reqs[i]
  end

  function response(status, headers, body)
    responses = responses + 1
    local k = tostring(status)
    statuses[k] = (statuses[k] or 0) + 1
    if status == 200 then
      -- A 200 is only a success if the body is a whole answer: the final SSE event for a stream
      -- (the gateway sends an error event instead of [DONE] if recording failed), choices otherwise.
      if stream then
        if not string.find(body, "data: [DONE]", 1, true) then bad_body = bad_body + 1 end
      else
        if not string.find(body, '"choices"', 1, true) then bad_body = bad_body + 1 end
      end
    end
  end

  function done(summary, latency, requests)
    local total_sent, total_responses, total_bad = 0, 0, 0
    local codes = {}
    for _, t in ipairs(threads) do
      total_sent = total_sent + (t:get("sent") or 0)
      total_responses = total_responses + (t:get("responses") or 0)
      total_bad = total_bad + (t:get("bad_body") or 0)
      local st = t:get("statuses") or {}
      for code, n in pairs(st) do
        codes[code] = (codes[code] or 0) + n
      end
    end
    local parts = {}
    for code, n in pairs(codes) do
      table.insert(parts, string.format('"%s":%d', code, n))
    end
    local e = summary.errors
    io.write(string.format(
      'BENCH_RESULT {"sent":%d,"responses":%d,"bad_body":%d,"statuses":{%s},'
      .. '"wrk_requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,'
      .. '"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p99_9":%d}}\n',
      total_sent, total_responses, total_bad, table.concat(parts, ","),
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency.stdev, latency.max,
      latency:percentile(50), latency:percentile(75), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9)))
  end
end

return M
