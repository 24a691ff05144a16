local line = io.read("l")
print("in: " .. line)
for _, a in ipairs(arg) do
  print("arg: " .. a)
end
print("héllo wörld ✓")
os.exit(3)
