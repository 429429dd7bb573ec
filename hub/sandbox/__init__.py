"""Local emulators of the image-edit providers' HTTP APIs; see ``hub.sandbox.app``."""
