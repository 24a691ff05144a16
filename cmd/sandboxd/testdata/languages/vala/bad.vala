void main () { nosuchthing (); }
