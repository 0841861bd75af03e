// Validates Kubernetes objects (a JSON list on argv[2]) against the
// Kubernetes OpenAPI schemas, as compiled into the `kubernetes-models` npm
// package (one class per apiVersion/kind with a JSON-schema validate()).
// scripts/setup.sh installs it into .cache/k8s-schemas; NODE_PATH points
// there. Prints one line per object; exits 1 if any object is invalid,
// 3 if the package is missing.
"use strict";
const fs = require("fs");

let models;
try {
  models = require("kubernetes-models");
} catch (e) {
  console.log("kubernetes-models not installed: " + e.message);
  process.exit(3);
}

function classFor(apiVersion, kind) {
  // kubernetes-models/<group>/<version>/<Kind>, core group as v1/<Kind>.
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : [null, apiVersion];
  const path = group ? `kubernetes-models/${group}/${version}/${kind}` : `kubernetes-models/${version}/${kind}`;
  try {
    return require(path)[kind];
  } catch (e) {
    return null;
  }
}

const objects = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
let bad = 0;
for (const obj of objects) {
  const what = `${obj.apiVersion} ${obj.kind} ${(obj.metadata || {}).name}`;
  const Cls = classFor(obj.apiVersion || "", obj.kind || "");
  if (!Cls) {
    console.log(`INVALID ${what}: no Kubernetes schema for this apiVersion/kind`);
    bad++;
    continue;
  }
  try {
    new Cls(obj).validate();
    console.log(`ok ${what}`);
  } catch (e) {
    console.log(`INVALID ${what}: ${e.message}`);
    bad++;
  }
}
process.exit(bad ? 1 : 0);
