(let [line (read-line)]
  (println (str "in: " line))
  (doseq [a *command-line-args*]
    (println (str "arg: " a)))
  (println "héllo wörld ✓")
  (flush)
  (System/exit 3))
