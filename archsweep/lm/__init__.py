"""The language-model prior over code sequences."""
