"""Stage 3: a Keras model to `.tflite` bytes in one mode, checked."""
