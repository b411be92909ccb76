"""Benchmarks run by ``make bench``; each writes JSON and markdown to benchmarks/results/."""
