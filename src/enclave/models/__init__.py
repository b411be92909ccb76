"""Model files: where they are, what they are called, what they contain."""
