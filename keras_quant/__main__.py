"""`python -m keras_quant`: the `keras-quant` command."""

import sys

from keras_quant.cli import main

sys.exit(main())
