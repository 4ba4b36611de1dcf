"""Test helpers shared across boundaries: used by benchmarks, by the end-to-end tests and by
more than one service's tests, so they belong to no one service's ``tests`` folder.
"""
