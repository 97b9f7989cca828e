"""Many processes on one PostgreSQL as one router: the mode, learned labels, the refit and each
conversation's context, shared through LISTEN/NOTIFY."""
