"""supernet package."""
