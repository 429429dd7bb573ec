"""Tasks: image edits submitted to a provider and followed to their end (the engine), their
inputs, what crosses to and from the provider, how they look, and provider limits."""
