let () = nosuchthing ()
