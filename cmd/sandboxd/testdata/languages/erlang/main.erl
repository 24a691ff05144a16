#!/usr/bin/env escript
main(Args) ->
    io:setopts([{encoding, unicode}]),
    Line = string:trim(io:get_line(""), trailing, "\n"),
    io:format("in: ~ts~n", [Line]),
    [io:format("arg: ~ts~n", [A]) || A <- Args],
    io:format("~ts~n", ["héllo wörld ✓"]),
    halt(3).
