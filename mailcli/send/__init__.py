"""send package."""
