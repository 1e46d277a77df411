"""A run's plan: where it lives, which checkpoint it starts from, its seed, finished or not.

Decided once by the launcher (the Ray driver, or the process that trains in-process) from the
loaded config, and once more, collectively, by the Ray workers of each attempt (which checkpoint
every rank loads: :func:`choose_start` over the work_dir's and Ray's checkpoints). It is passed
explicitly; nothing is written into the config.

The one precedence rule, the same in-process and on Ray:

1. ``resume_from`` (``--resume-from``): the run starts from that checkpoint, whatever the work_dir
   holds (its files are written over as training reaches them, as in mmdet). Once this launch has
   saved checkpoints of its own (Ray restarted its workers), it continues from its newest one.
2. else ``auto_resume`` (on unless the config or ``--no-auto-resume`` says otherwise): the run's
   newest loadable checkpoint — the work_dir's, ``checkpoint_config.out_dir``'s or Ray's,
   whichever got furthest; a finished run is reported, not trained again.
3. else a fresh start: the work_dir's earlier run is moved aside (``<work_dir>.old-<time>``).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
import uuid

import numpy as np

from ..engine.checkpoint import (NUMBERED, check_work_dir, checkpoint_dirs, checkpoint_progress, find_latest_checkpoint,
                                 finished, load_file, set_aside)
from ..engine.dist import broadcast_object, get_rank
from ..errors import ConfigError

logger = logging.getLogger("raydet")

#: the directory under the temp dir where a bucket run's files are staged on each node
STAGING = "raydet-staging"


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """What a run decided about itself. ``work_dir`` is local (a bucket run's staging directory);
    ``storage`` is Ray's storage path when it is not the work_dir (``ray.storage_path``, or the
    bucket a work_dir URI names). ``start`` is the checkpoint training starts from (``None``: from
    scratch); ``resume_from`` the one asked for explicitly. ``seed`` is the run's one seed and
    ``seed_from`` where it came from. ``launch`` identifies this launch: its checkpoints carry it,
    so that a restarted worker group tells its own checkpoints from an earlier run's.
    ``finished``: the meta of the run's last checkpoint when the run is already complete."""

    work_dir: str
    checkpoint_dirs: tuple[str, ...]
    storage: str | None = None
    start: str | None = None
    resume_from: str | None = None
    auto_resume: bool = True
    seed: int = 0
    seed_from: str = "from the config"
    deterministic: bool = False
    validate: bool = True
    launch: str = ""
    timestamp: str = ""
    finished: dict | None = None
    source: str | None = None
    exp_name: str = "config.py"

    @property
    def own_only(self) -> str | None:
        """The launch whose checkpoints a restart may continue from; ``None``: any of the run's."""
        return self.launch if self.resume_from else None

    def starting_from(self, start: str | None) -> "RunPlan":
        """This plan, starting from ``start`` (what the workers chose): a seed that is not the
        config's is the one ``start`` was trained with."""
        configured = self.seed if self.seed_from == "from the config" else None
        seed, origin = _seed(configured, start, self.seed)
        return dataclasses.replace(self, start=start, seed=seed, seed_from=origin)


def locate(cfg, work_dir: str | None = None) -> tuple[str, str | None]:
    """``(local work_dir, Ray storage or None)`` of ``cfg``: ``work_dir`` (a flag), else the
    config's, else ``./work_dirs/<config name>``; environment variables expanded, made absolute.
    A work_dir on a bucket (``s3://bucket/runs/name?endpoint_override=...``, ``gs://...``) is
    Ray's storage: its parent becomes the storage path and each node works in a local directory
    of the same name under the temp dir (``raydet-staging/name``)."""
    name = os.path.splitext(os.path.basename(cfg.filename or "raydet.py"))[0]
    path = os.path.expandvars(str(work_dir or cfg.get("work_dir") or os.path.join("work_dirs", name)))
    storage = (cfg.get("ray") or {}).get("storage_path")
    if "://" not in path:
        return os.path.abspath(path), storage
    base, sep, query = path.partition("?")
    parent, leaf = base.rstrip("/").rsplit("/", 1)
    if "://" not in parent or not leaf:
        raise ConfigError(f"work_dir={path!r}: a bucket work_dir needs a path, e.g. s3://bucket/runs/name")
    if storage:
        raise ConfigError("work_dir is a bucket URI and ray.storage_path is set: give one of them")
    return os.path.join(tempfile.gettempdir(), STAGING, leaf), parent + sep + query


def run_dir(plan: RunPlan) -> str:
    """Ray's run directory: the work_dir itself, or ``<storage>/<work_dir's name>`` (a directory
    or a bucket URI, whose ``?query`` stays at the end)."""
    if not plan.storage:
        return plan.work_dir
    base, sep, query = plan.storage.partition("?")
    return base.rstrip("/") + "/" + os.path.basename(plan.work_dir) + sep + query


def _seed(configured, start: str | None, drawn) -> tuple[int, str]:
    """The run's seed: the config's; else the one ``start`` was trained with (a config without a
    seed keeps the seed it started with across restarts); else ``drawn``."""
    if configured is not None:
        return int(configured), "from the config"
    saved = load_file(start, mmap=True)["meta"].get("seed") if start else None
    if saved is not None:
        return int(saved), f"from the checkpoint {start}"
    return int(drawn), "drawn once for this run by the launcher"


def holds_a_run(work_dir: str) -> bool:
    """Whether ``work_dir`` holds an earlier run: its periodic checkpoints or Ray's record of it."""
    names = os.listdir(work_dir) if os.path.isdir(work_dir) else []
    return any(NUMBERED.match(n) or n in ("latest.pth", "checkpoint_manager_snapshot.json") for n in names)


def draw_seed() -> int:
    """A seed drawn on rank 0 (every rank of an initialised group calls this: a collective)."""
    return int(broadcast_object(int(np.random.SeedSequence().generate_state(1)[0] >> 1) if get_rank() == 0 else None))


def choose_start(plan: RunPlan, found: list) -> str | None:
    """The precedence rule (module docstring): of ``found`` (the newest loadable checkpoints the
    caller found that the plan may continue — the work_dir's first, then Ray's — see
    :attr:`RunPlan.own_only`) and the explicit ``resume_from``, the one that got furthest
    (:func:`checkpoint_progress`); the first on a tie. ``None``: start from scratch."""
    options = [path for path in found if path] + ([plan.resume_from] if plan.resume_from else [])
    return max(options, key=checkpoint_progress) if options else None


def plan_run(cfg, *, work_dir: str | None = None, validate: bool = True, auto_resume: bool = True,
             seed: int | None = None, deterministic: bool | None = None, source: str | None = None,
             launcher: str = "none") -> RunPlan:
    """Decide the run of the loaded ``cfg`` (see the module docstring); every rank of an
    initialised process group calls it (the drawn seed is rank 0's). Arguments override the
    config (``--work-dir``, ``--seed``, ``--deterministic``); ``auto_resume`` is the default
    when the config has no ``auto_resume`` key. ``launcher='none'`` refuses a bucket work_dir
    (only Ray uploads). A fresh start (rule 3) moves the old run aside here. Raises
    :class:`ConfigError` for an unusable work_dir."""
    where, storage = locate(cfg, work_dir)
    if storage and launcher == "none" and "://" in storage:
        given = os.path.expandvars(str(work_dir or cfg.get("work_dir") or storage))
        raise ConfigError(f"work_dir={given}: a bucket work_dir (or ray.storage_path) needs the Ray launcher "
                          "(--launcher ray)")
    check_work_dir(where)
    dirs = tuple(checkpoint_dirs(where, (cfg.get("checkpoint_config") or {}).get("out_dir")))
    auto = bool(auto_resume if cfg.get("auto_resume") is None else cfg.auto_resume)
    resume_from = cfg.get("resume_from")
    plan = RunPlan(work_dir=where, checkpoint_dirs=dirs, storage=storage, resume_from=resume_from,
                   auto_resume=auto, validate=validate, launch=uuid.uuid4().hex[:12],
                   deterministic=bool(cfg.get("deterministic", False) if deterministic is None else deterministic),
                   timestamp=time.strftime("%Y%m%d_%H%M%S"), source=source or cfg.filename,
                   exp_name=os.path.basename(source or cfg.filename or "config.py"))
    found = []
    if resume_from is None and auto and get_rank() == 0:
        found = [find_latest_checkpoint(*dirs)]
    elif resume_from is None and get_rank() == 0 and holds_a_run(where):
        set_aside(where)
        check_work_dir(where)
    start = broadcast_object(choose_start(plan, found) if get_rank() == 0 else None)
    done = finished(load_file(start, mmap=True)["meta"], cfg.runner) if start and resume_from is None else None
    configured = seed if seed is not None else cfg.get("seed")
    chosen, origin = _seed(configured, start, draw_seed() if configured is None else None)
    return dataclasses.replace(plan, start=start, finished=done, seed=chosen, seed_from=origin)


def finished_notice(plan: RunPlan, cfg) -> str:
    """What to tell a person who re-runs a finished run: that it is complete and, when this
    config differs from the one it was trained with, how (and how to train this one afresh)."""
    from ..config.loader import config_differences
    meta = plan.finished
    lines = [f"raydet: {plan.work_dir} is already complete ({meta['iter']}/{meta['max_iters']} iterations)"]
    diff = config_differences(meta.get("config") or "", cfg)
    if diff:
        lines.append("raydet: this config differs from the one that run was trained with: " + "; ".join(diff))
        lines.append("raydet: to train this config, use --no-auto-resume (the finished run is moved aside) or "
                     "another --work-dir")
    return "\n".join(lines)
