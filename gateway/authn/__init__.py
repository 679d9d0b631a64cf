"""Authentication: one module per credential kind, each turning a credential into a Principal."""
