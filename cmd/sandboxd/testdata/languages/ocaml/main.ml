let () =
  let line = input_line stdin in
  print_endline ("in: " ^ line);
  Array.iteri (fun i a -> if i > 0 then print_endline ("arg: " ^ a)) Sys.argv;
  print_endline "héllo wörld ✓";
  exit 3
