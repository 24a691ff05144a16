gets stdin line
puts "in: $line"
foreach a $argv {
    puts "arg: $a"
}
puts "héllo wörld ✓"
exit 3
