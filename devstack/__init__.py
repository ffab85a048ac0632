"""Start and stop the real services of the local stack: Prefect server, Azurite, the gateway.

The tests, the demo and the benchmarks all start services through this package, so there is
one way to choose a port, wait for health and stop a process tree.
"""
