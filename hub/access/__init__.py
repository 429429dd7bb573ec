"""Who may do what: API keys (each its own tenant), signed tokens (callback, watch and
blob URLs), and rate limits per key and per URL."""
