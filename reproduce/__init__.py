"""gatezoo reproduce (filled in by the task issues)."""
