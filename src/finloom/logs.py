"""Quiet the libraries finloom drives, so a run shows finloom's progress bars and errors, not noise.

Library output that matters (warnings from torch or datatrove's own stats) still lands in each
stage's log files; the console gets one line per stage and a progress bar per long step.
"""

from __future__ import annotations

import logging
import sys
import warnings


def quiet_libraries() -> None:
    import datasets
    import transformers
    from datatrove.utils.logging import logger as datatrove_logger

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    datatrove_logger.remove()
    datatrove_logger.add(sys.stderr, level="ERROR")
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per teacher request once anything logs at INFO
