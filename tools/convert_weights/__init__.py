"""PyTorch <-> JAX weight converters: the only code that knows PyTorch/HF/GGUF tensor names."""
