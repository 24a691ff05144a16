using System;

class Program {
	static int Main(string[] args) {
		Console.OutputEncoding = new System.Text.UTF8Encoding(false);
		string line = Console.ReadLine();
		Console.WriteLine("in: " + line);
		foreach (var a in args)
			Console.WriteLine("arg: " + a);
		Console.WriteLine("héllo wörld ✓");
		return 3;
	}
}
