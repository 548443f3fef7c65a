-- Argo CD health check for antimatter.io/AzureRootKey, following kstatus:
--   Degraded    being deleted, and the operator refuses to revoke (Deleting=False: the key is
--               Antimatter's active key, or registered by someone else), with its message
--   Progressing being deleted otherwise (revoking, or Deleting=Unknown: waiting for rotation)
--   Suspended   spec.suspend is true
--   Progressing no status yet, status.observedGeneration < metadata.generation,
--               or the Ready condition is absent or Unknown
--   Healthy     Ready=True and observedGeneration == generation
--   Degraded    Ready=False with a terminal reason (fixing it needs a change to the object,
--               its Secret or Azure/Antimatter permissions; retrying alone will not help)
--   Progressing Ready=False with any other (transient) reason, with its message
-- Keep in sync with argocd-cm.yaml (same script, inlined) and tests/packaging/test_argocd_health.py.
local terminal = {
  InvalidSpec = true,
  PolicyDenied = true,
  KeyClaimed = true,
  KeyNotFound = true,
  UnsupportedKeyType = true,
  KeyDisabled = true,
  KeyNotUsable = true,
  MissingKeyOperations = true,
  Forbidden = true,
  InvalidCredentials = true,
  PairingMisconfigured = true,
  ActiveKeyChanged = true,
  ActivationConflict = true,
}

local hs = {}

-- "Reason: message", or whichever of them is set.
local function explain(condition)
  local reason = condition.reason or ""
  local message = condition.message or ""
  if message == "" then
    return reason
  elseif reason == "" then
    return message
  end
  return reason .. ": " .. message
end

local function find_condition(type)
  if obj.status ~= nil and obj.status.conditions ~= nil then
    for _, condition in ipairs(obj.status.conditions) do
      if condition.type == type then
        return condition
      end
    end
  end
  return nil
end

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  local deleting = find_condition("Deleting")
  if deleting ~= nil and deleting.status == "False" then
    hs.status = "Degraded"
    hs.message = "Deletion blocked: " .. explain(deleting)
  elseif deleting ~= nil then
    hs.status = "Progressing"
    hs.message = "Deleting: " .. explain(deleting)
  else
    hs.status = "Progressing"
    hs.message = "Deleting: waiting for the operator to remove what this object added"
  end
  return hs
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Reconciliation is suspended (spec.suspend: true)"
  return hs
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local generation = 0
if obj.metadata ~= nil and obj.metadata.generation ~= nil then
  generation = obj.metadata.generation
end
local observed = obj.status.observedGeneration
if observed == nil or observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local ready = find_condition("Ready")

if ready == nil or ready.status == "Unknown" then
  hs.status = "Progressing"
  hs.message = (ready ~= nil and ready.message) or "Waiting for the Ready condition"
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  return hs
end

if terminal[ready.reason or ""] then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
hs.message = explain(ready)
return hs
