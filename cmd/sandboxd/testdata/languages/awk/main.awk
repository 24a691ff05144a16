BEGIN {
	getline line < "/dev/stdin"
	print "in: " line
	for (i = 1; i < ARGC; i++)
		print "arg: " ARGV[i]
	print "héllo wörld ✓"
	exit 3
}
