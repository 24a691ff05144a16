line = fgetl(stdin);
printf("in: %s\n", line);
args = argv();
for i = 1:numel(args)
  printf("arg: %s\n", args{i});
end
printf("héllo wörld ✓\n");
exit(3);
