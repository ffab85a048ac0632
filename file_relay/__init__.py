"""The Function App's logic: announce each arriving file, stream its records to a queue, post the Summary.

`function_app.py` only wires these modules to the Functions host's bindings, so everything here
can be imported and run without the host (tests, the local stand-in host, benchmarks).
"""
