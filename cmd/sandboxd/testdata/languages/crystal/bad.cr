puts nosuchthing
