"""Benchmark suites run by ``fastbert bench`` (see README.md); a package so their names cannot clash with tests/."""
