"""Tests of the built container images, started as the chart's pods."""
