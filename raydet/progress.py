"""mmcv's progress bar, where a person waits: evaluation, testing, dataset generation."""
import sys
import time


class ProgressBar:
    """mmcv's progress bar: on a terminal one line redrawn in place; elsewhere (a pipe, a file, a
    Ray worker) one line per ``every`` percent, written to ``log`` (a logger: the run's log
    file only, not the console) or else to ``stream``. Rank 0 only, by its callers."""

    def __init__(self, total: int, stream=None, log=None, desc: str = "", every: int = 10):
        self.total, self.done, self.start = total, 0, time.time()
        self.stream = stream or sys.stderr
        self.log, self.desc, self.every = log, desc, every
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.next_pct = every

    def update(self, n: int = 1):
        self.done += n
        elapsed = time.time() - self.start
        fps = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / fps if fps > 0 else 0
        if self.tty:
            width = 30
            filled = int(width * self.done / max(self.total, 1))
            self.stream.write(f"\r{self.desc}[{'>' * filled}{' ' * (width - filled)}] {self.done}/{self.total}, "
                              f"{fps:.1f} task/s, elapsed: {int(elapsed)}s, ETA: {int(eta)}s")
            if self.done >= self.total:
                self.stream.write("\n")
            self.stream.flush()
            return
        pct = 100 * self.done // max(self.total, 1)
        if pct < self.next_pct and self.done < self.total:
            return
        self.next_pct = (pct // self.every + 1) * self.every
        line = (f"{self.desc}{self.done}/{self.total} ({pct}%), {fps:.1f} task/s, elapsed: {int(elapsed)}s, "
                f"ETA: {int(eta)}s")
        if self.log is not None:
            from .logs import FILE_ONLY
            self.log.info(line, extra=FILE_ONLY)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()
