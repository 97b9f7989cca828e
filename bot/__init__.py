"""crabbot the chat bot: agent, memory, upstream client, admin commands and platform adapters."""
