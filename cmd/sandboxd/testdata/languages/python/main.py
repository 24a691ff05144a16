import sys
line = sys.stdin.readline().rstrip("\n")
print("in: " + line)
for a in sys.argv[1:]:
    print("arg: " + a)
print("héllo wörld ✓")
sys.exit(3)
