"""Benchmarks: model training and evaluation (`models`), the gateway under load (`gateway`)."""
