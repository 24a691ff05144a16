int main() { return nosuchthing; }
