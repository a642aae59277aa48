"""Serving: ONNX export per model part, FP16/INT8 variants, the Triton model repository, a local
Triton, the registry-to-Triton reconciler, and the model verbs over served graphs."""
