class Program { static void Main() { nosuchthing(); } }
