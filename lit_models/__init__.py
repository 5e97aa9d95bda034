"""gatezoo lit_models (filled in by the task issues)."""
