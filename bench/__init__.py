"""Benchmarks: `make bench` runs each module; they print figures and never fail on time."""
