"""Named exceptions raised by raydet. Library code raises these; only the CLI turns them into exit codes."""


class RaydetError(Exception):
    """Base class of every error raydet raises on purpose."""


class ConfigError(RaydetError, ValueError):
    """A config file or override is invalid: unknown key, wrong value, inconsistent settings."""


class DataError(RaydetError):
    """An image or annotation file is missing, unreadable or malformed; the message names the file."""


class MissingFileError(DataError):
    """A dataset's annotation file (or VOC image list or XML file) does not exist here; ``path``
    names it. A launcher whose driver does not see the data tells this apart from bad data."""

    def __init__(self, message: str, path: str = ""):
        super().__init__(message)
        self.path = path

    def __reduce__(self):
        return (type(self), (str(self), self.path))


class CheckpointError(RaydetError):
    """A checkpoint is missing, truncated, corrupt or does not match the run it is loaded into."""


class NonFiniteLossError(RaydetError, FloatingPointError):
    """A training loss became NaN/Inf (in full precision, or repeatedly under loss scaling). Carries ``epoch``, ``iter`` and ``losses``."""

    def __init__(self, epoch: int, iter: int, losses: dict, detail: str = ""):
        self.epoch, self.iter, self.losses, self.detail = epoch, iter, losses, detail
        shown = ", ".join(f"{k}={v:.4g}" for k, v in losses.items())
        super().__init__(f"non-finite loss at epoch {epoch + 1}, iter {iter + 1}: {shown}{detail}")

    def __reduce__(self):  # crosses process boundaries (Ray, multiprocessing) intact
        return (type(self), (self.epoch, self.iter, self.losses, self.detail))
