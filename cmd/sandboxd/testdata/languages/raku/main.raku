my $line = $*IN.get;
say "in: $line";
say "arg: $_" for @*ARGS;
say "héllo wörld ✓";
exit 3;
