"""Mutation: what the gateway adds to a request it lets through."""
