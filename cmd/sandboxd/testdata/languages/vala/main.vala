int main (string[] args) {
	string line = stdin.read_line ();
	stdout.printf ("in: %s\n", line);
	for (int i = 1; i < args.length; i++)
		stdout.printf ("arg: %s\n", args[i]);
	stdout.printf ("héllo wörld ✓\n");
	return 3;
}
