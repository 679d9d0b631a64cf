"""API keys: the account credential, from creation to revocation."""
