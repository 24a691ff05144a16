:- initialization(main, main).

main :-
    read_line_to_string(user_input, Line),
    format("in: ~w~n", [Line]),
    current_prolog_flag(argv, Argv),
    forall(member(A, Argv), format("arg: ~w~n", [A])),
    format("héllo wörld ✓~n"),
    halt(3).
