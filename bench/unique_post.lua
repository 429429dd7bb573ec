-- wrk script for scripts/bench: every request POSTs a unique JSON body of about SIZE bytes
-- (argument 1, default 1024), since the hub deduplicates byte-identical bodies, and the run
-- ends with one machine-readable line: "WRK_JSON {...}".
--   wrk -t2 -c50 -d10s -s bench/unique_post.lua URL -- 1024 RUN_TAG

local threads = {}

function setup(thread)
    table.insert(threads, thread)
    thread:set("thread_number", #threads)
end

function init(args)
    local size = tonumber(args[1] or "1024")
    local tag = args[2] or "run"
    counter = 0
    -- Fixed-width counter: every body has the same length.
    prefix = string.format('{"task_id":"%s-%d-', tag, thread_number)
    local fixed = #prefix + 9 + #'","pad":"' + #'"}'
    suffix = '","pad":"' .. string.rep("x", math.max(0, size - fixed)) .. '"}'
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
end

function request()
    counter = counter + 1
    return wrk.format(nil, nil, nil, prefix .. string.format("%09d", counter) .. suffix)
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
        '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
        '"latency_p50_us":%d,"latency_p99_us":%d,"latency_max_us":%d}\n',
        summary.requests, summary.duration, summary.bytes,
        e.connect, e.read, e.write, e.status, e.timeout,
        latency:percentile(50), latency:percentile(99), latency.max))
end
