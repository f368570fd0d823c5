"""Benchmarks of the CodeTask operator against what the same cluster does without it.

`python -m bench` runs them all, `python -m bench NAME...` some; results go to `bench/results/`.
"""
