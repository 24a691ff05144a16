#lang racket/base
(define line (read-line))
(printf "in: ~a\n" line)
(for ([a (current-command-line-arguments)])
  (printf "arg: ~a\n" a))
(printf "héllo wörld ✓\n")
(exit 3)
