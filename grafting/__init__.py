"""grafting package."""
