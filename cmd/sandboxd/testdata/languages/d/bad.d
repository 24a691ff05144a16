void main() { nosuchthing(); }
