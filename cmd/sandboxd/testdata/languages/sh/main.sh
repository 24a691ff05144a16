read -r line
echo "in: $line"
for a in "$@"; do echo "arg: $a"; done
echo "héllo wörld ✓"
exit 3
