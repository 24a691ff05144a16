import std.stdio, std.string;

int main(string[] args) {
	auto line = readln().chomp;
	writeln("in: ", line);
	foreach (a; args[1 .. $])
		writeln("arg: ", a);
	writeln("héllo wörld ✓");
	return 3;
}
