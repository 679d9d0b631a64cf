"""The demo: a bundled sandbox backend with synthetic data, and the gateway in front of it."""
