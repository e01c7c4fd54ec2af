"""The chat gateway: resolve a model name to a provider route, then forward to it."""
