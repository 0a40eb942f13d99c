"""deliverability package."""
