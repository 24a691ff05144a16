fun main(args: Array<String>) { nosuchthing() }
