program main
  implicit none
  print *, nosuchthing
end program main
