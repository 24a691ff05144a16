my $line = <STDIN>;
chomp $line;
print "in: $line\n";
print "arg: $_\n" for @ARGV;
print "héllo wörld ✓\n";
exit 3;
