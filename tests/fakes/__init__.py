"""Small fake servers of external HTTP APIs on 127.0.0.1, speaking their real wire formats."""
