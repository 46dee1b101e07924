"""Remote probe agents: the server side (tokens, results, silence) and the agent process."""
