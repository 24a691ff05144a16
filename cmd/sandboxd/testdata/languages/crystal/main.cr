line = STDIN.gets || ""
puts "in: #{line}"
ARGV.each { |a| puts "arg: #{a}" }
puts "héllo wörld ✓"
exit 3
