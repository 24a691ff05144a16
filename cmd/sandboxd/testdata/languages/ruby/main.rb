line = STDIN.gets.chomp
puts "in: #{line}"
ARGV.each { |a| puts "arg: #{a}" }
puts "héllo wörld ✓"
exit 3
