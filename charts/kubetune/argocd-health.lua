-- Argo CD health check for kubetune.io/TrainableJob, installed in argocd-cm under
-- resource.customizations.health.kubetune.io_TrainableJob (docs/gitops.md).
-- Argo CD runs it with the live object in the global `obj` (Lua 5.1) and reads
-- the returned {status, message}. Conditions are found by type, never by list
-- position: their order is not part of the API.
local hs = {}
local status = obj.status or {}

local function condition(ctype)
  for _, c in ipairs(status.conditions or {}) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function describe(c, fallback)
  local reason = c.reason or ""
  local message = c.message or ""
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  end
  if message ~= "" then
    return message
  end
  if reason ~= "" then
    return reason
  end
  return fallback
end

local function verdict(health, message)
  hs.status = health
  hs.message = message
  return hs
end

-- The verdict when the condition of type ctype is True, else nil.
local function when_true(ctype, health, fallback)
  local c = condition(ctype)
  if is_true(c) then
    return verdict(health, describe(c, fallback))
  end
  return nil
end

-- Complete and Failed never return to False, and the operator no longer
-- reconciles a finished job: they win over a spec edited afterwards.
local finished = when_true("Failed", "Degraded", "the job failed")
  or when_true("Complete", "Healthy", "the job succeeded")
if finished then
  return finished
end

local generation = (obj.metadata or {}).generation
local observed = status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  return verdict(
    "Progressing",
    "waiting for the operator to observe generation " .. string.format("%d", generation)
  )
end

local suspended = when_true("Suspended", "Suspended", "suspended")
if suspended then
  return suspended
end

local running = condition("Running")
if running ~= nil and running.status == "Unknown" and running.reason == "HeartbeatStale" then
  return verdict("Progressing", describe(running, "the worker stopped reporting"))
end

local summary = status.phase or "Pending"
if type(status.iteration) == "number" then
  summary = summary .. ", iteration " .. string.format("%d", status.iteration)
end
if running ~= nil and running.message ~= nil and running.message ~= "" then
  summary = summary .. ": " .. running.message
end
return verdict("Progressing", summary)
