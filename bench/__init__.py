"""ecmpd's benchmark runner (not part of the test suite): ``python bench/run.py``."""
