"""The model families over a shared X-encoder, and a registry that builds any of them by name."""
