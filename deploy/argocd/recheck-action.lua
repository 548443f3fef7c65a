local os = require("os")
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
-- Any change to the annotation makes the operator check the object at once.
obj.metadata.annotations["antimatter.io/recheck"] = os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
