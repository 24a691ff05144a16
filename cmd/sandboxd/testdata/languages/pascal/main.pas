program Main;
var
  line: string;
  i: integer;
begin
  readln(line);
  writeln('in: ', line);
  for i := 1 to ParamCount do
    writeln('arg: ', ParamStr(i));
  writeln('héllo wörld ✓');
  Halt(3);
end.
