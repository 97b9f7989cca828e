"""The pool of labelled message vectors: held in memory for search, persisted, and seeded from
the shipped data."""
