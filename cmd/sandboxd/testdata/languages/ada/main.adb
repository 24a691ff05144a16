with Ada.Text_IO;      use Ada.Text_IO;
with Ada.Command_Line; use Ada.Command_Line;

procedure Main is
   Line : constant String := Get_Line;
begin
   Put_Line ("in: " & Line);
   for I in 1 .. Argument_Count loop
      Put_Line ("arg: " & Argument (I));
   end loop;
   Put_Line ("héllo wörld ✓");
   Set_Exit_Status (3);
end Main;
