"""The benchmark of issue 5: the bot against a bare Bolt app, and postmortems by size.

Run it with `python -m bench.run --out DIR` (add `--quick` for a tiny run); BENCHMARKS.md
records the figures of a full run and what they mean.
"""
