"""pfbook."""
