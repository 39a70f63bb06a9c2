"""The command line's stderr filter keeps Python's messages, and a logger
made while it runs still works after it."""

import subprocess
import sys

SCRIPT = """
import logging, os, sys
from keras_quant import native_stderr
with native_stderr.python_only():
    os.write(2, b"native line\\n")
    logger = logging.getLogger("made_inside")
    logger.addHandler(logging.StreamHandler())
    logger.warning("inside")
logger.warning("after")
"""


def test_logger_made_inside_the_filter_writes_after_it():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True
    )
    assert done.returncode == 0
    assert done.stderr.splitlines() == ["inside", "after"]
