"""Where the package's messages go: one plain line each on stdout, for a terminal, a log file or a Kaggle kernel."""

import logging
import sys


def to_stdout():
    """Send every `digits.*` logger's INFO and above to the current sys.stdout (set anew each call: tests swap it)."""
    logger = logging.getLogger("digits")
    logger.handlers = [logging.StreamHandler(sys.stdout)]
    logger.setLevel(logging.INFO)
