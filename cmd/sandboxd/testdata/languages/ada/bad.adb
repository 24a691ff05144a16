procedure Main is
begin
   Nosuchthing;
end Main;
