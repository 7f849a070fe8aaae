-- Argo CD health check for modelship.io/ModelDeployment.
-- Install: add to argocd-cm under resource.customizations.health.modelship.io_ModelDeployment
-- (see docs/gitops.md). It reads the kstatus conditions the operator writes.
local hs = {status = "Progressing", message = "Waiting for the operator"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= obj.metadata.generation then
  hs.message = "The operator has not seen the latest spec yet"
  return hs
end
local conditions = {}
for _, c in ipairs(obj.status.conditions) do
  conditions[c.type] = c
end
local message = obj.status.message or ""
if conditions["InvalidSpec"] ~= nil and conditions["InvalidSpec"].status == "True" then
  return {status = "Degraded", message = conditions["InvalidSpec"].message}
end
if conditions["Stalled"] ~= nil and conditions["Stalled"].status == "True" then
  return {status = "Degraded", message = message}
end
if obj.status.phase == "Paused" then
  return {status = "Suspended", message = message}
end
if conditions["Reconciling"] ~= nil and conditions["Reconciling"].status == "True" then
  return {status = "Progressing", message = message}
end
if conditions["Ready"] ~= nil and conditions["Ready"].status == "True" then
  return {status = "Healthy", message = message}
end
return {status = "Progressing", message = message}
