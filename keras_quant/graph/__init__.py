"""Stage 1: trace a Keras graph and place the quantization points."""
