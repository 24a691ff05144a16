program Main;
begin
  nosuchthing;
end.
