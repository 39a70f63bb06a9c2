"""Every private Keras, TensorFlow and LiteRT API keras-quant relies on.

Nothing outside this package touches a name with a leading underscore of
another library, nor imports `keras.src` or `tensorflow.python`. Each
function here says what it reads, so that a release that moves it breaks
in one place, with a clear error (`check_versions`).
"""
