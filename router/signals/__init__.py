"""What names a message's task: the LLM categorizer, the local signal and the conversation
context."""
