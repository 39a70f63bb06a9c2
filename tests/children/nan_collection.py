"""Run with KERAS_BACKEND set: three banked points, on columns 1, 2 and 3,
see a batch with NaN in column 1 and Inf in column 3, then a clean one;
prints each point's state as JSON."""

import json

import keras
import numpy as np

import keras_quant
from keras_quant.observation.observers import Observer
from keras_quant.observation.observers import read


def main():
    inputs = keras.Input((4,))
    outputs = [
        Observer(estimator, name=f"point_{k}", banked=True)(
            keras.layers.Lambda(lambda x, k=k: x[:, k + 1 : k + 2] * (k + 1))(
                inputs
            )
        )
        for k, estimator in enumerate(["minmax", "ema", "percentile"])
    ]
    model = keras_quant.ObservedModel(inputs, outputs)
    batch = np.array([[1, np.nan, -2, np.inf], [0.5, 3, 4, 2]], "float32")
    model.predict(batch, verbose=0)
    model.predict(batch[1:], verbose=0)
    state = [
        [
            float(read(o.min_)),
            float(read(o.max_)),
            int(read(o.nonfinite_batches_)),
            int(read(o.batches_seen_)),
        ]
        for o in model.observers
    ]
    print(json.dumps(state))


if __name__ == "__main__":
    main()
