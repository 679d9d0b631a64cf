"""Forwarding: proxy mode streams to the upstream; decision mode answers a proxy in front."""
