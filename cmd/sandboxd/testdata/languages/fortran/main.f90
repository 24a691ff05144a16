program main
  implicit none
  character(len=256) :: line, arg
  integer :: i
  read (*, '(A)') line
  print '(A)', 'in: ' // trim(line)
  do i = 1, command_argument_count()
    call get_command_argument(i, arg)
    print '(A)', 'arg: ' // trim(arg)
  end do
  print '(A)', 'héllo wörld ✓'
  call exit(3)
end program main
