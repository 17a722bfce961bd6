"""A Ctrl-C that always stops the run, even where a library swallows the KeyboardInterrupt it raises.

Python raises KeyboardInterrupt wherever the main thread happens to be when SIGINT arrives. Where
that is a finaliser, a weakref callback or a library's broad ``except``, the exception is printed
or dropped and the run goes on (seen on a busy machine: a Ctrl-C during pretrain or the data
judge ended with exit 0). While a run is active, finloom's handler also remembers the signal;
training checks it after every step, the data stage between phases, and the runner after every
stage, so a remembered interrupt stops the run there with exit 130.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_received = threading.Event()


def _on_sigint(signum, frame) -> None:
    _received.set()
    raise KeyboardInterrupt


@contextlib.contextmanager
def remembering_interrupts() -> Iterator[None]:
    """Within the block, SIGINT raises KeyboardInterrupt and is also remembered (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if a Ctrl-C arrived that nobody acted on."""
    if _received.is_set():
        raise KeyboardInterrupt
