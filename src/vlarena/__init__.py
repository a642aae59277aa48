"""vlarena: train, compare and serve token-prediction and embedding-prediction vision-language models."""

__version__ = "0.1.0"
