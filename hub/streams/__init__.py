"""Streams: the broker that fans committed events out, the one SSE writer (replay, then
live), the wire formats (SSE frames, smee's), and watch tokens."""
