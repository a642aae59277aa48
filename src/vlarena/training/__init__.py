"""Training: the one loop every family trains under, auxiliary stages, optimiser groups and schedule, distributed set-up."""
