# bench/__init__.py - the benchmark harness of keeldb (run it with `make bench` or `python -m bench.run`).
"""Benchmarks of keel against the peer Python drivers, in the same run, alternating.

Not a test suite and not part of the installed package: bench/README.md says how to run it and
what each workload measures.
"""
