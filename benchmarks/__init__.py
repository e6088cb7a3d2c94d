"""Benchmarks: quality on the official test splits, batch throughput, serving latency. Each prints its figures."""
