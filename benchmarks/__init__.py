"""smtppool's benchmark suite: ``python -m benchmarks --help``.

Not part of the test run. See the README's "Benchmarks" section.
"""
