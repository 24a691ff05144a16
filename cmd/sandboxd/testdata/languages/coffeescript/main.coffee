line = require("fs").readFileSync(0, "utf8").split("\n")[0]
console.log "in: " + line
console.log "arg: " + a for a in process.argv[2..]
console.log "héllo wörld ✓"
process.exitCode = 3
