"""Progress of a long loop on stderr, never stdout (which carries results only): one reporter for every tool."""

import sys
import time


class Progress:
    """Progress over `total` items on stderr, never stdout (which carries results only).

    On a terminal, a tqdm bar; otherwise (a log file, a pipe) plain lines without carriage returns or colour
    codes: one at the start, one per tenth done and one at the end with the rate. `enabled=False` prints nothing.
    """

    def __init__(self, total, desc, unit="image", enabled=True, stream=None):
        self.total = None if total is None else int(total)  # None: unknown (a video without a frame count)
        self.desc, self.unit, self.enabled = desc, unit, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.count, self.start, self._bar, self._tenths = 0, time.monotonic(), None, 0
        if not enabled:
            return
        if _isatty(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=desc, unit=unit, file=self.stream)
        else:
            self._line(f"{desc}: {'an unknown number of' if self.total is None else self.total} {unit}(s)")

    def _line(self, text):
        print(text, file=self.stream, flush=True)

    def update(self, n=1):
        """`n` more items done."""
        self.count += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and self.total and self.count < self.total:
            tenths = 10 * self.count // self.total
            if tenths > self._tenths:
                self._tenths = tenths
                self._line(f"{self.desc}: {self.count}/{self.total} {self.unit}(s) ({10 * tenths}%)")

    def close(self):
        """The final line (plain mode) or the bar's end."""
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            seconds = time.monotonic() - self.start
            rate = f", {self.count / seconds:.1f} {self.unit}(s)/s" if seconds > 0 and self.count else ""
            done = self.count if self.total is None else f"{self.count}/{self.total}"
            self._line(f"{self.desc}: {done} {self.unit}(s) done in {seconds:.1f} s{rate}")
        self.enabled, self._bar = False, None


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
