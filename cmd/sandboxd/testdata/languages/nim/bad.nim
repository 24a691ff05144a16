echo nosuchthing
