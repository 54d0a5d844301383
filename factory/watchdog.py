"""A deadline for a stream that stops yielding rows.

Ray can leave a stream waiting forever: when a node is lost, a task whose argument lived only there
may wait for an object nobody will recreate (Ray core: an actor task's output whose actor is gone).
``stall_deadline`` turns that wait into ``StreamStalled`` in the driver's main thread once
``seconds`` pass without a ``beat()``, so the job abandons the stream (Ray Data shuts it down as the
exception leaves its iterator) and replans from the committed prefix, as after any broken stream.

The deadline needs the main thread (it interrupts the blocked wait with a signal); elsewhere (a
driver running the factory in a thread) it does nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Iterator


class StreamStalled(RuntimeError):
    """No row arrived for the configured time: the stream is abandoned and replanned."""


class _Deadline:
    def __init__(self, seconds: float):
        self.seconds, self.last = seconds, time.monotonic()
        self.done = threading.Event()
        self.active = True  # False once the block is left: a late signal is ignored

    def beat(self) -> None:
        self.last = time.monotonic()

    def watch(self, main_thread: int) -> None:
        while not self.done.wait(1.0):
            if time.monotonic() - self.last > self.seconds:
                signal.pthread_kill(main_thread, signal.SIGUSR2)
                self.last = time.monotonic()  # once per period, until the main thread leaves the stream


@contextlib.contextmanager
def stall_deadline(seconds: float | None) -> Iterator[_Deadline]:
    """Within the block, ``StreamStalled`` is raised in the main thread after ``seconds`` without ``beat()``."""
    deadline = _Deadline(seconds or 0.0)
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield deadline
        return

    def stalled(signum, frame):
        if deadline.active:
            raise StreamStalled(f"no row for {seconds:g} s (factory.stream_stall_s): the stream is abandoned")

    previous = signal.signal(signal.SIGUSR2, stalled)
    watcher = threading.Thread(target=deadline.watch, args=(threading.main_thread().ident,), daemon=True,
                               name="stream-stall-deadline")
    watcher.start()
    try:
        yield deadline
    finally:
        deadline.active = False
        deadline.done.set()
        watcher.join()
        signal.signal(signal.SIGUSR2, previous)
