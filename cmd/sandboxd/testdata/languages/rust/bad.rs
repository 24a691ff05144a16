fn main() { nosuchthing(); }
