package main

func main() { nosuchthing() }
