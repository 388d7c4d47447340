"""The hostile-request fuzz suite's data and generators (see tests/test_fuzz.py)."""
