int main(void) { return nosuchthing; }
