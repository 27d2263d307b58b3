"""Benchmarks of llm-entry: `python -m bench [--quick] [--out BENCHMARKS.md]`.

Every comparison runs both sides in one run, alternating, so the machine's
noise (other jobs on 2 cores) lands on both and cancels in the ratio.
"""
