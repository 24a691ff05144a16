main :: IO ()
main = nosuchthing
