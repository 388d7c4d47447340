"""Shipped search data (built by `build.py` from the official R4 definitions)."""
