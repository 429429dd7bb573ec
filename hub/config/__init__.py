"""Configuration: the settings read from HUB_* variables, and the data directory with the
secrets the hub generates."""
