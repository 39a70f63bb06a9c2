"""Run, time and inspect `.tflite` files in LiteRT."""
