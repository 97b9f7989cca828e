"""`crabbot proxy`: the OpenAI-compatible routing proxy, built on the routing core."""
