import os

let line = stdin.readLine()
echo "in: ", line
for i in 1 .. paramCount():
  echo "arg: ", paramStr(i)
echo "héllo wörld ✓"
quit(3)
