"""Experiments: running a job end to end on top of training, evaluation and serving (the data
and visual inputs, the feature cache, training runs, metrics.json, the report, exports)."""
