const line = require("fs").readFileSync(0, "utf8").split("\n")[0];
console.log("in: " + line);
for (const a of process.argv.slice(2)) console.log("arg: " + a);
console.log("héllo wörld ✓");
process.exitCode = 3;
