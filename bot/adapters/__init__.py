"""Platform adapters: each turns its platform's events into Agent and Admin calls."""
