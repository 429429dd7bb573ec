"""Blobs: image bytes the hub keeps (uploads, inputs, results), what counts as an image,
and the URLs they are served at."""
