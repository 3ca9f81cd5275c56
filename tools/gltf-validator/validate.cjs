// Validate glTF/GLB files with the Khronos glTF-Validator: one JSON line per file on stdout,
// {"file", "errors", "warnings", "infos", "hints", "messages": [first 20 error messages]}.
// Usage: node validate.cjs FILE...   Exit code 0 even when a file has errors (the caller judges).
const fs = require("fs");
const path = require("path");
const validator = require("gltf-validator");

async function main(files) {
  for (const file of files) {
    const bytes = new Uint8Array(fs.readFileSync(file));
    const report = await validator.validateBytes(bytes, {
      uri: path.basename(file),
      maxIssues: 1000,
      externalResourceFunction: (uri) =>
        Promise.resolve(new Uint8Array(fs.readFileSync(path.join(path.dirname(file), decodeURIComponent(uri))))),
    });
    const issues = report.issues;
    const errors = issues.messages.filter((m) => m.severity === 0).slice(0, 20).map((m) => `${m.code}: ${m.message} (${m.pointer || ""})`);
    console.log(JSON.stringify({ file, errors: issues.numErrors, warnings: issues.numWarnings, infos: issues.numInfos,
                                 hints: issues.numHints, messages: errors }));
  }
}

main(process.argv.slice(2)).catch((err) => { console.error(String(err)); process.exit(2); });
