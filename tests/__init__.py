"""The tests: real services on loopback ports (tests/conftest.py), helpers beside them."""
