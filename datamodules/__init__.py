"""gatezoo datamodules (filled in by the task issues)."""
