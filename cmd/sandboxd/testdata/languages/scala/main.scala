object Main {
  def main(args: Array[String]): Unit = {
    val line = scala.io.StdIn.readLine()
    println("in: " + line)
    args.foreach(a => println("arg: " + a))
    println("héllo wörld ✓")
    sys.exit(3)
  }
}
