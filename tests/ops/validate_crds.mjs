// Validate custom resources against their CRDs' JSON schemas, offline: the validators compiled
// from the Prometheus Operator's and KEDA's CRDs by @kubernetes-models (pinned in
// deploy/local/package.json, installed by `make .venv`).
//
//   node validate_crds.mjs NODE_MODULES < objects.json > results.json
//
// In: a JSON array of Kubernetes objects. Out: a JSON array, one entry per object, in order:
// {"errors": [...], "unconstrained": [...]}. "errors" are the schema's violations ("/spec/x: must
// be string"); an object of a kind with no validator here is an error too. "unconstrained" lists
// the fields the schema puts no constraint on: the generated schemas allow unknown fields, which
// an API server prunes without a word, so a misspelt field shows up here and nowhere else. A field
// is constrained when giving it a value of another JSON type makes the schema fail at its path.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const nodeModules = process.argv[2] && resolve(process.argv[2]);
if (!nodeModules) {
  process.stderr.write("usage: node validate_crds.mjs NODE_MODULES < objects.json\n");
  process.exit(2);
}
const require = createRequire(join(nodeModules, "noop.js"));
// prometheus-operator is ES modules only, with an "exports" map for `import`: load its files.
const prometheus = async (kind) => {
  const file = join(nodeModules, "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1", `${kind}.js`);
  return (await import(pathToFileURL(file).href))[kind];
};
const MODELS = {
  "monitoring.coreos.com/v1/ServiceMonitor": await prometheus("ServiceMonitor"),
  "monitoring.coreos.com/v1/PrometheusRule": await prometheus("PrometheusRule"),
  "keda.sh/v1alpha1/ScaledObject": require("@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject").ScaledObject,
};

/** The schema's errors for `object` (ajv's), [] when it is valid. */
function violations(Model, object) {
  try {
    new Model(object).validate();
    return [];
  } catch (error) {
    if (!Array.isArray(error.errors)) throw error;
    return error.errors;
  }
}

const pointer = (path) => path.map((p) => `/${String(p).replaceAll("~", "~0").replaceAll("/", "~1")}`).join("");

/** Every [path, value] below `value` (objects' fields and arrays' items), depth first. */
function* fields(value, path = []) {
  const entries = Array.isArray(value) ? value.entries() : value && typeof value === "object" ? Object.entries(value) : [];
  for (const [key, sub] of entries) {
    yield [[...path, key], sub];
    yield* fields(sub, [...path, key]);
  }
}

/** A deep copy of `object` with the value at `path` replaced. */
function replaced(object, path, value) {
  const copy = structuredClone(object);
  let node = copy;
  for (const key of path.slice(0, -1)) node = node[key];
  node[path.at(-1)] = value;
  return copy;
}

function check(object) {
  const Model = MODELS[`${object?.apiVersion}/${object?.kind}`];
  if (!Model) return { errors: [`no CRD schema here for ${object?.apiVersion} ${object?.kind}`], unconstrained: [] };
  const errors = [...new Set(violations(Model, object).map((e) => `${e.instancePath || "/"}: ${e.message}`))];
  const unconstrained = [];
  if (errors.length === 0) {
    const skip = []; // below an unconstrained field nothing is constrained either
    for (const [path, value] of fields(object)) {
      const at = pointer(path);
      if (skip.some((p) => at.startsWith(`${p}/`))) continue;
      // an array where anything but an array is expected, an object where an array is
      const probe = Array.isArray(value) ? { probe: true } : [[]];
      const hit = violations(Model, replaced(object, path, probe)).some(
        (e) => e.instancePath === at || e.instancePath.startsWith(`${at}/`),
      );
      if (!hit) {
        unconstrained.push(at);
        skip.push(at);
      }
    }
  }
  return { errors, unconstrained };
}

const objects = JSON.parse(readFileSync(0, "utf8"));
process.stdout.write(JSON.stringify(objects.map(check)));
