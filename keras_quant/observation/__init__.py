"""Stage 2: observe activation ranges (observers, estimators, the observed
model) and simulate quantization for training (QAT)."""
