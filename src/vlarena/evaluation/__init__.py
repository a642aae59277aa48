"""Evaluation: metrics with chance levels, measured on the models and data it is given, and the comparison report rendered from them."""
