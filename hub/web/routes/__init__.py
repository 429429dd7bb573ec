"""Thin HTTP handlers, grouped by resource."""
