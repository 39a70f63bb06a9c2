"""Stage 4: measure a quantized model against the float one on data."""
