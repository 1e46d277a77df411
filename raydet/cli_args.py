"""What every ``raydet`` command's arguments share: mmcv's ``--cfg-options`` (with dicts), seeds,
the help layout (defaults shown, examples kept), the console logger and the cores a command uses."""
from __future__ import annotations

import argparse
import logging
import os

from mmcv import DictAction

from .errors import RaydetError


class CfgOptions(DictAction):
    """mmcv's ``--cfg-options KEY=VALUE ...`` (``1,2`` and ``[1,2]`` lists, tuples, ints,
    floats, booleans, ``None``, bare strings), plus dict values, which mmcv's parser mangles:
    ``lr_config=dict(policy='step', step=[8, 11])`` or ``lr_config="{'policy': 'step'}"``, and
    lists of them (``custom_hooks="[dict(type='ExpMomentumEMAHook', priority=49)]"``), literals
    only: nothing is evaluated. ``KEY`` without ``=`` or a malformed value is a usage error naming
    the argument."""

    def __call__(self, parser, namespace, values, option_string=None):
        options = dict(getattr(namespace, self.dest, None) or {})
        for item in values:
            key, sep, text = item.partition("=")
            if not sep or not key:
                parser.error(f"{option_string} {item!r}: expected KEY=VALUE, e.g. optimizer.lr=0.01")
            text = text.strip()
            holds_dicts = text.startswith(("dict(", "{")) or (text.startswith(("[", "(")) and
                                                              ("dict(" in text or "{" in text))
            if holds_dicts:
                try:
                    options[key] = _literal(text)
                except (ValueError, SyntaxError, TypeError) as exc:
                    what = "a dict" if text.startswith(("dict(", "{")) else "a list of dicts"
                    parser.error(f"{option_string} {key}: cannot parse {text!r} as {what} ({exc})")
            else:
                options[key] = self._parse_iterable(text)
        setattr(namespace, self.dest, options)


def _literal(text: str):
    """``dict(a=1, b=[2])``, ``{'a': 1}`` or a list/tuple of them (nested too), from literals only."""
    import ast

    def value(node):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
            if any(k.arg is None for k in node.keywords):
                raise ValueError("** is not allowed")
            return {k.arg: value(k.value) for k in node.keywords}
        if isinstance(node, ast.Dict):
            return {ast.literal_eval(k): value(v) for k, v in zip(node.keys, node.values)}
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [value(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        return ast.literal_eval(node)
    parsed = value(ast.parse(text, mode="eval").body)
    if not isinstance(parsed, (dict, list, tuple)):
        raise ValueError("not a dict or a list")
    return parsed


def _seed(text: str) -> int:
    """A seed numpy and torch both take: an int in [0, 2**32)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value < 2 ** 32:
        raise argparse.ArgumentTypeError(f"{value} is outside [0, 2**32): numpy's and torch's seeds")
    return value


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written; ``(default: X)`` after an option's help unless the
    default is empty or the help already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (default is None or default is argparse.SUPPRESS or isinstance(default, bool) or default == {}
                or "default" in text or not action.option_strings):
            return text
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else " ".join(map(str, default)) \
            if isinstance(default, list) else default
        return f"{text} (default: {shown})"



def command_parser(sub, name: str, short: str, description: str, examples: list[str]) -> argparse.ArgumentParser:
    """The sub-parser of command ``name``: its one-line help, description and examples."""
    return sub.add_parser(name, help=short, description=description, formatter_class=HelpFormatter,
                          epilog="examples:\n" + "\n".join(f"  {e}" for e in examples))


def add_cfg_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cfg-options", nargs="+", action=CfgOptions, default={}, metavar="KEY=VALUE",
                        help="override config keys (mmcv's --cfg-options), e.g. model.test_cfg.score_thr=0.3 "
                             "data.test.ann_file=other.json")


def usable_cores() -> int:
    """The CPU cores this process may use: its affinity, capped by a cgroup CPU quota (a
    container's ``cpu.max``), which ``os.cpu_count()`` and torch's default both ignore."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return cores


def setup_console_logging(level=logging.INFO):
    from .logs import console_handler
    log = logging.getLogger("raydet")
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in log.handlers):
        log.addHandler(console_handler())
    log.setLevel(level)
    log.propagate = False
    return log


def check_output_places(out: str | None, show_dir: str | None) -> None:
    """The folder of ``out`` exists and ``show_dir`` is not a file: checked before any long work."""
    if out and not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise RaydetError(f"--out {out}: the folder {os.path.dirname(os.path.abspath(out))} does not exist")
    if show_dir and os.path.exists(show_dir) and not os.path.isdir(show_dir):
        raise RaydetError(f"--show-dir {show_dir} is a file, not a folder")
