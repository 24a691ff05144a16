fun main(args: Array<String>) {
    val line = readLine() ?: ""
    println("in: $line")
    for (a in args) println("arg: $a")
    println("héllo wörld ✓")
    kotlin.system.exitProcess(3)
}
