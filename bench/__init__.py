"""The benchmark harness of the hub: ``scripts/bench`` runs ``python -m bench.run``.

Compares the hub with a bare Starlette endpoint (the ceiling for a Python service) and with
nginx + Nchan (the reference for the path), on loopback, at the same moment.
"""
