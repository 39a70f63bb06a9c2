"""Small real architectures and their data, for the model-zoo benchmark.

`ARCHITECTURES` maps a name to a builder: calling it returns a Keras model
with random weights (nothing can be downloaded here) whose
BatchNormalization statistics, where it has any, are those of natural
image crops, so that activations have realistic ranges. Image models take
96x96x3 inputs, scaled the way the architecture's `preprocess_input`
expects.

Data, all generated offline:

- images: random crops of the two photographs shipped in scikit-learn's
  wheel (`sklearn.datasets.load_sample_images`: china.jpg, flower.jpg),
  at a random scale, resized to 96x96 and randomly flipped;
- sequences: smooth random walks (cumulative sums of normal noise),
  normalized to unit variance;
- text: random token ids.

`calibration_inputs` and `heldout_inputs` draw from disjoint random
streams, and the BatchNormalization statistics from a third one.

Example:

>>> model = ARCHITECTURES["lstm"](seed=0)
>>> heldout_inputs("lstm", 4).shape
(4, 16, 8)
"""

import dataclasses
import functools
from typing import Callable
from typing import Optional

import keras
import numpy as np
import tensorflow as tf
from sklearn.datasets import load_sample_images

IMAGE_SIZE = 96
CLASSES = 10
BATCH_NORM_SAMPLES = 32
SEQUENCE_SHAPE = (16, 8)
VOCABULARY = 1000
TEXT_LENGTH = 32

# Random streams, one per use, so calibration and held-out data never share
# samples: `np.random.default_rng([seed, STREAM])`.
CALIBRATION_STREAM = 0
HELDOUT_STREAM = 1
BATCH_NORM_STREAM = 2


# --------------------------------------------------------------------------
# Data


@functools.lru_cache(maxsize=1)
def _photographs():
    """The two sample photographs, as float32 arrays in [0, 255]."""
    return [image.astype(np.float32) for image in load_sample_images().images]


def image_crops(n, rng):
    """`n` random 96x96 crops of the sample photographs, in [0, 255].

    Each crop takes a random square of 96 to 400 pixels from a random
    photograph, resizes it to 96x96 (antialiased bilinear) and flips it
    left-right half of the time.

    Args:
        n: number of crops.
        rng: a `numpy.random.Generator`.

    Returns:
        float32 array of shape (n, 96, 96, 3).
    """
    photographs = _photographs()
    crops = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
    for i in range(n):
        photo = photographs[rng.integers(len(photographs))]
        height, width = photo.shape[:2]
        side = int(rng.integers(IMAGE_SIZE, min(height, width, 400) + 1))
        top = int(rng.integers(height - side + 1))
        left = int(rng.integers(width - side + 1))
        square = photo[top : top + side, left : left + side]
        resized = tf.image.resize(
            square, (IMAGE_SIZE, IMAGE_SIZE), antialias=True
        ).numpy()
        crops[i] = resized[:, ::-1] if rng.random() < 0.5 else resized
    return np.clip(crops, 0.0, 255.0)


def random_walks(n, rng):
    """`n` smooth sequences of shape (16, 8): normalized random walks."""
    steps = rng.normal(size=(n, *SEQUENCE_SHAPE))
    walks = np.cumsum(steps, axis=1)
    walks -= walks.mean(axis=1, keepdims=True)
    walks /= walks.std(axis=(1, 2), keepdims=True) + 1e-6
    return walks.astype(np.float32)


def token_ids(n, rng):
    """`n` sequences of 32 random token ids in [0, 1000), int32."""
    return rng.integers(0, VOCABULARY, size=(n, TEXT_LENGTH)).astype(np.int32)


def scale_to_unit(x):
    """Images from [0, 255] to [-1, 1] (`preprocess_input`'s "tf" mode)."""
    return x / 127.5 - 1.0


# --------------------------------------------------------------------------
# Architectures


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A model builder and the data its model takes.

    Calling it builds the model: `Architecture(...)(seed=0)`.

    Attributes:
        construct: makes the model with freshly initialised weights.
        data: generates raw samples, `data(n, rng)`.
        preprocess: maps raw samples to model inputs, or None.
    """

    construct: Callable[[], keras.Model]
    data: Callable[[int, np.random.Generator], np.ndarray]
    preprocess: Optional[Callable[[np.ndarray], np.ndarray]] = None

    def __call__(self, seed=0):
        """A new model, weights drawn from `seed`, BN statistics set."""
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        model = self.construct()
        if _batch_norm_layers(model):
            stream = np.random.default_rng([seed, BATCH_NORM_STREAM])
            set_batch_norm_statistics(
                model, self.inputs(BATCH_NORM_SAMPLES, stream)
            )
        return model

    def inputs(self, n, rng):
        """`n` model inputs drawn with `rng`."""
        samples = self.data(n, rng)
        if self.preprocess is None:
            return samples
        return np.asarray(self.preprocess(samples.copy()), np.float32)


def _batch_norm_layers(model):
    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def set_batch_norm_statistics(model, x):
    """Sets every BatchNormalization's moving statistics from `x`.

    With momentum 0 and dropout off, one training-mode call replaces each
    layer's moving mean and variance by the statistics of its input on
    `x`, its upstream layers normalizing with the same statistics; so
    inference on `x` then matches the training-mode call.

    Args:
        model: a Keras model.
        x: a batch of model inputs.
    """
    norms = _batch_norm_layers(model)
    dropouts = [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.Dropout)
    ]
    momenta = [layer.momentum for layer in norms]
    rates = [layer.rate for layer in dropouts]
    try:
        for layer in norms:
            layer.momentum = 0.0
        for layer in dropouts:
            layer.rate = 0.0
        model(x, training=True)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
        for layer, rate in zip(dropouts, rates):
            layer.rate = rate


def _image_input():
    return keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))


def mobilenet_v2():
    """MobileNetV2, width 0.35."""
    return keras.applications.MobileNetV2(
        input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
        alpha=0.35,
        weights=None,
        classes=CLASSES,
    )


def mobilenet_v3():
    """MobileNetV3Small: hard-swish and squeeze-excite, inputs in [-1, 1]."""
    return keras.applications.MobileNetV3Small(
        input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
        minimalistic=False,
        weights=None,
        classes=CLASSES,
        include_preprocessing=False,
    )


def _application(constructor):
    """A builder for a `keras.applications` model at 96x96x3, 10 classes."""

    def construct():
        return constructor(
            input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
            weights=None,
            classes=CLASSES,
        )

    construct.__doc__ = f"{constructor.__name__}, random weights."
    return construct


@keras.saving.register_keras_serializable(package="keras_quant_zoo")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding to each position of a (batch, n, d) input."""

    def build(self, input_shape):
        self.embedding = self.add_weight(
            shape=tuple(input_shape[1:]),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="embedding",
        )

    def call(self, inputs):
        return inputs + self.embedding


def _transformer_block(x, dim, heads=2, key_dim=16):
    """Pre-norm attention and gelu MLP, each with a residual Add."""
    y = keras.layers.LayerNormalization(epsilon=1e-6)(x)
    y = keras.layers.MultiHeadAttention(num_heads=heads, key_dim=key_dim)(y, y)
    x = keras.layers.Add()([x, y])
    y = keras.layers.LayerNormalization(epsilon=1e-6)(x)
    y = keras.layers.Dense(2 * dim, activation="gelu")(y)
    y = keras.layers.Dense(dim)(y)
    return keras.layers.Add()([x, y])


def vit(dim=64, patch=8, blocks=2):
    """A small Vision Transformer: 8x8 patches, 2 blocks, mean-pooled."""
    inputs = _image_input()
    x = keras.layers.Conv2D(dim, patch, strides=patch)(inputs)
    x = keras.layers.Reshape(((IMAGE_SIZE // patch) ** 2, dim))(x)
    x = PositionEmbedding()(x)
    for _ in range(blocks):
        x = _transformer_block(x, dim)
    x = keras.layers.LayerNormalization(epsilon=1e-6)(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="vit")


def _convnext_block(x, dim):
    """Depthwise 7x7, LayerNorm, 4x gelu MLP, residual Add."""
    y = keras.layers.DepthwiseConv2D(7, padding="same")(x)
    y = keras.layers.LayerNormalization(epsilon=1e-6)(y)
    y = keras.layers.Dense(4 * dim, activation="gelu")(y)
    y = keras.layers.Dense(dim)(y)
    return keras.layers.Add()([x, y])


def convnext(dims=(32, 64), depths=(2, 2)):
    """A two-stage ConvNeXt: patchify stem, blocks, LayerNorm downsampling."""
    inputs = _image_input()
    x = keras.layers.Conv2D(dims[0], 4, strides=4)(inputs)
    x = keras.layers.LayerNormalization(epsilon=1e-6)(x)
    for stage, (dim, depth) in enumerate(zip(dims, depths)):
        if stage:
            x = keras.layers.LayerNormalization(epsilon=1e-6)(x)
            x = keras.layers.Conv2D(dim, 2, strides=2)(x)
        for _ in range(depth):
            x = _convnext_block(x, dim)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.LayerNormalization(epsilon=1e-6)(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="convnext")


def _recurrent(layer_class):
    """A batch-1 recurrent classifier: (1, 16, 8) -> RNN(32) -> Dense(10)."""

    def construct():
        inputs = keras.Input(shape=SEQUENCE_SHAPE, batch_size=1)
        x = layer_class(32)(inputs)
        outputs = keras.layers.Dense(CLASSES)(x)
        return keras.Model(inputs, outputs, name=layer_class.__name__.lower())

    construct.__doc__ = f"Batch-1 {layer_class.__name__}(32) classifier."
    return construct


def text():
    """Embedding, mean pooling and two Dense layers over 32 token ids."""
    inputs = keras.Input((TEXT_LENGTH,), dtype="int32")
    x = keras.layers.Embedding(VOCABULARY, 32)(inputs)
    x = keras.layers.GlobalAveragePooling1D()(x)
    x = keras.layers.Dense(16, activation="relu")(x)
    outputs = keras.layers.Dense(2)(x)
    return keras.Model(inputs, outputs, name="text")


_applications = keras.applications
ARCHITECTURES = {
    "mobilenet_v2": Architecture(
        mobilenet_v2, image_crops, _applications.mobilenet_v2.preprocess_input
    ),
    "mobilenet_v3": Architecture(mobilenet_v3, image_crops, scale_to_unit),
    "efficientnet": Architecture(
        _application(_applications.EfficientNetB0),
        image_crops,
        _applications.efficientnet.preprocess_input,
    ),
    "densenet": Architecture(
        _application(_applications.DenseNet121),
        image_crops,
        _applications.densenet.preprocess_input,
    ),
    "resnet": Architecture(
        _application(_applications.ResNet50),
        image_crops,
        _applications.resnet50.preprocess_input,
    ),
    "xception": Architecture(
        _application(_applications.Xception),
        image_crops,
        _applications.xception.preprocess_input,
    ),
    "vit": Architecture(vit, image_crops, scale_to_unit),
    "convnext": Architecture(convnext, image_crops, scale_to_unit),
    "lstm": Architecture(_recurrent(keras.layers.LSTM), random_walks),
    "gru": Architecture(_recurrent(keras.layers.GRU), random_walks),
    "text": Architecture(text, token_ids),
}

# Quick ones for `make bench`: a CNN, a transformer, a recurrent model.
SUBSET = ["mobilenet_v2", "vit", "lstm"]


def calibration_inputs(name, n, seed=0):
    """`n` calibration inputs for architecture `name`.

    Args:
        name: a key of `ARCHITECTURES`.
        n: number of samples.
        seed: seed of the stream; never shared with `heldout_inputs`.

    Returns:
        An array of model inputs (float32, or int32 token ids).
    """
    rng = np.random.default_rng([seed, CALIBRATION_STREAM])
    return ARCHITECTURES[name].inputs(n, rng)


def heldout_inputs(name, n, seed=0):
    """`n` held-out inputs for `name`, disjoint from the calibration ones."""
    rng = np.random.default_rng([seed, HELDOUT_STREAM])
    return ARCHITECTURES[name].inputs(n, rng)
