"""The ``raydet`` logger's console and file-only lines: the lowest layer, used by every other."""
from __future__ import annotations

import logging
import sys


#: ``logger.info(text, extra=FILE_ONLY)``: the run's log file gets the line, the console not
#: (long tables a person looks up when needed, such as the hook order)
FILE_ONLY = {"file_only": True}
FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"


def _mark_file_only(record) -> bool:
    record.file_only = True
    return True


def file_only_logger(logger: logging.Logger) -> logging.Logger:
    """A child of ``logger`` whose lines reach the run's log file, not the console: what
    :data:`FILE_ONLY` does, as a Logger (mmcv's ``print_log``, which mmdet's evaluations write their
    tables with, takes no adapter)."""
    child = logger.getChild("tables")
    if _mark_file_only not in child.filters:
        child.addFilter(_mark_file_only)
    return child


class _StdoutHandler(logging.StreamHandler):
    """Writes to ``sys.stdout`` as it is at each line, not as it was when the handler was made:
    a notebook kernel or a test harness may replace (and close) the stream in between."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _):
        pass


def console_handler() -> logging.Handler:
    """The console's handler for the ``raydet`` logger: standard output, mmcv's line format, and
    lines logged with :data:`FILE_ONLY` left out."""
    handler = _StdoutHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(lambda record: not getattr(record, "file_only", False))
    return handler
