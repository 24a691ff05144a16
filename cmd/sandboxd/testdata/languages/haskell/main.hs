import System.Environment (getArgs)
import System.Exit
import System.IO

main :: IO ()
main = do
  hSetEncoding stdin utf8
  hSetEncoding stdout utf8
  line <- getLine
  putStrLn ("in: " ++ line)
  args <- getArgs
  mapM_ (\a -> putStrLn ("arg: " ++ a)) args
  putStrLn "héllo wörld ✓"
  exitWith (ExitFailure 3)
