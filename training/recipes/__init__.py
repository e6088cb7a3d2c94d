"""Recipes: one command each that reproduces a shipped artifact (the default model)."""
