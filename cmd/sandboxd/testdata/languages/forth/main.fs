create buf 256 allot
: args ( -- ) begin next-arg dup while ." arg: " type cr repeat 2drop ;
: main ( -- )
  buf 256 stdin read-line 2drop
  ." in: " buf swap type cr
  args
  ." héllo wörld ✓" cr
  3 (bye) ;
main
