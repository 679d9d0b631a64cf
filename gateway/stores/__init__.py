"""State shared between requests (and, with Redis, between replicas), behind small protocols."""
