def line = System.in.newReader("UTF-8").readLine()
println "in: " + line
args.each { println "arg: " + it }
println "héllo wörld ✓"
System.exit(3)
