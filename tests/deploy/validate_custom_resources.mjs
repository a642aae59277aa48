// Validates custom resources against their CRDs' schemas, as compiled into the
// @kubernetes-models packages. Usage: node validate_custom_resources.mjs NODE_MODULES < objects.json
// Prints one JSON line per object: {"name", "kind", "error"} (error null when valid).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
const models = {
  "monitoring.coreos.com/v1/ServiceMonitor": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor.js",
  "monitoring.coreos.com/v1/PodMonitor": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor.js",
  "monitoring.coreos.com/v1/PrometheusRule": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule.js",
  "keda.sh/v1alpha1/ScaledObject": "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject.js",
};

const objects = JSON.parse(readFileSync(0, "utf8"));
for (const obj of objects) {
  const key = `${obj.apiVersion}/${obj.kind}`;
  let error = null;
  if (!(key in models)) {
    error = `no schema for ${key}`;
  } else {
    const module = await import(pathToFileURL(join(modules, models[key])).href);
    try {
      new module[obj.kind](obj).validate();
    } catch (e) {
      error = e.message;
    }
  }
  console.log(JSON.stringify({ name: obj.metadata?.name, kind: obj.kind, error }));
}
