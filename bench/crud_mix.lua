-- The CRUD mix for wrk: create, read, update, search, delete, in that order, over and over.
--
--   CRUD_PREFIX=/fhir/Patient wrk -t2 -c32 -d20s -s bench/crud_mix.lua http://127.0.0.1:PORT
--
-- Each wrk thread keeps its own queue of live resources (filled from the Location header
-- of every 201). A read, update or search takes the newest live resource; a delete takes
-- the oldest (once KEEP are live), so a resource is never read while its deletion is in
-- flight. Until then (the first requests of a run) the step becomes a create. The search
-- finds the resource by its identifier (unique per create), which both servers index.
--
-- `done` prints one JSON line (latencies in milliseconds) that bench/crud_bench.py reads.

local prefix = os.getenv("CRUD_PREFIX") or "/fhir/Patient"
local system = "http://hospital.example/mrn"
local steps = { "create", "read", "update", "search", "delete" }
-- A delete takes the oldest live resource only while this thread keeps at least KEEP
-- (more than its connections): the oldest is then no longer the newest that another
-- connection may be reading or updating.
local KEEP = 64
local headers = { ["Content-Type"] = "application/fhir+json",
                  ["Accept"] = "application/fhir+json" }

local threads = {}
local thread_count = 0

function setup(thread)
  thread:set("thread_number", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

local live = {}          -- queue of {id, mrn}: live[first] .. live[last]
local first, last = 1, 0
local step = 0
local created = 0
unexpected = 0  -- global: done() reads it from each thread

local function patient(id, mrn, gender)
  local id_member = id and ('"id":"' .. id .. '",') or ""
  return '{"resourceType":"Patient",' .. id_member ..
    '"identifier":[{"system":"' .. system .. '","value":"' .. mrn .. '"}],' ..
    '"name":[{"family":"Rivera","given":["Ana","Maria"]}],"gender":"' .. gender .. '",' ..
    '"birthDate":"1990-04-02","address":[{"line":["12 Harbor St"],"city":"Boston",' ..
    '"state":"MA","postalCode":"02110"}],"telecom":[{"system":"phone","value":"555-0100"}]}'
end

local function create()
  created = created + 1
  local mrn = "MRN-" .. thread_number .. "-" .. created
  return wrk.format("POST", prefix, headers, patient(nil, mrn, "female"))
end

function request()
  step = step % #steps + 1
  local name = steps[step]
  if name == "create" or last < first then
    return create()
  end
  if name == "delete" and last - first < KEEP then
    return create()  -- too few live resources: the oldest may still be in another's read
  end
  if name == "delete" then
    local entry = live[first]
    live[first] = nil
    first = first + 1
    return wrk.format("DELETE", prefix .. "/" .. entry.id, headers)
  end
  local entry = live[last]
  if name == "read" then
    return wrk.format("GET", prefix .. "/" .. entry.id, headers)
  elseif name == "update" then
    return wrk.format("PUT", prefix .. "/" .. entry.id, headers,
                      patient(entry.id, entry.mrn, "male"))
  end
  return wrk.format("GET", prefix .. "?identifier=" .. system .. "%7C" .. entry.mrn, headers)
end

function response(status, response_headers, body)
  if status == 201 then
    local location = response_headers["Location"] or response_headers["location"] or ""
    local id = location:match("/([^/]+)/_history/") or location:match("([^/]+)$")
    local mrn = body:match('"value":"(MRN%-[%d%-]+)"')
    if id and mrn then
      last = last + 1
      live[last] = { id = id, mrn = mrn }
    else
      unexpected = unexpected + 1
    end
  end
end

function done(summary, latency, requests)
  local errors = summary.errors
  local failed = errors.status + errors.connect + errors.read + errors.write + errors.timeout
  local unparsed = 0  -- 201 answers without a Location id or the identifier in the body
  for _, thread in ipairs(threads) do
    unparsed = unparsed + thread:get("unexpected")
  end
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "errors": %d, "unparsed": %d, "p50_ms": %.2f, "p95_ms": %.2f, ' ..
    '"p99_ms": %.2f, "mean_ms": %.2f, "max_ms": %.2f}\n',
    summary.requests, summary.duration / 1e6, failed, unparsed,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, latency.mean / 1000, latency.max / 1000))
end
