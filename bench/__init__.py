"""Benchmarks of tokenwallet over HTTP, each writing bench/results/<name>.json (see README)."""
