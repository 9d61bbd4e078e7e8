"""A small progress bar with rate and ETA for long loops (evaluation, projection, demo)."""

import math
import sys
import time


def format_duration(seconds):
    """``H:MM:SS`` for an ETA or elapsed time; ``?`` when unknown (infinite or NaN)."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """``Progress(total, "FID")``; call ``update(n)`` as work is done. Prints at most every ``interval`` s.

    ``total`` None or 0: unknown (e.g. all images of a folder, counted as they are read): the line gives
    the count and rate, without a percentage or ETA.
    """

    def __init__(self, total, label, interval=2.0, stream=None):
        self.total, self.label, self.interval = int(total or 0), label, interval
        self.stream = stream or sys.stderr
        self.done, self.start, self._last = 0, time.time(), 0.0

    def update(self, n=1):
        self.done = self.done + int(n) if not self.total else min(self.total, self.done + int(n))
        now = time.time()
        if now - self._last >= self.interval or (self.total and self.done >= self.total):
            self._last = now
            elapsed = now - self.start
            rate = self.done / elapsed if elapsed > 0 else 0.0
            if self.total:
                eta = (self.total - self.done) / rate if rate > 0 else float("inf")
                eta_text = f"{int(eta) // 60}:{int(eta) % 60:02d}" if eta != float("inf") else "?"
                text = f"{self.done}/{self.total} {100 * self.done / self.total:5.1f}% {rate:.1f}/s ETA {eta_text}"
            else:
                text = f"{self.done} {rate:.1f}/s"
            self.stream.write(f"[{self.label}] {text}\n")
            self.stream.flush()

    __call__ = update
