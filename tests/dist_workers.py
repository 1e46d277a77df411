"""Rank bodies for the tests that run a real ``torch.distributed`` group in spawned processes (no
Ray). Each takes ``(rank, world, init_file, ...)`` as ``torch.multiprocessing.spawn`` passes it
and writes what it saw as JSON or a file under the test's directory."""
import json
import os

import torch
import torch.distributed as dist


def init_group(rank, world, init_file, backend):
    # a file store: no port; gloo's own sockets stay on loopback (GLOO_SOCKET_IFNAME, set by the test)
    dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)


class _Dataset:
    """Four images whose 'prediction' is their index; evaluate() checks the order."""

    def __len__(self):
        return 4

    def evaluate(self, results, logger=None, **kwargs):
        return dict(order=[int(r) for r in results], count=len(results))


class _Model(torch.nn.Module):
    def forward(self, return_loss=False, rescale=True, idx=()):
        return [float(i) for i in idx]


class _Loader(list):
    dataset = _Dataset()


def collectives(rank, world, init_file, out_dir):
    """Every raydet collective on a group whose only backend is for CUDA tensors (``cuda:gloo``:
    it refuses CPU tensors exactly as an NCCL-only group does)."""
    init_group(rank, world, init_file, "cuda:gloo")
    from raydet.apis.train import init_random_seed, parse_losses
    from raydet.engine import Runner
    from raydet.engine.dist import all_gather_objects, all_reduce_mean, barrier, broadcast_object, gather_objects
    from raydet.engine.inference import evaluate_distributed

    seen = {}
    seen["mean"] = all_reduce_mean({"a": float(rank), "b": 2.0 * rank})
    _, seen["log_vars"] = parse_losses({"loss_x": torch.tensor([1.0 + rank, 3.0 + rank]),
                                        "acc": torch.tensor(float(rank))})
    seen["broadcast"] = broadcast_object({"from": rank})
    seen["gather"] = gather_objects(rank * 10)
    seen["all_gather"] = all_gather_objects(rank * 10)
    seen["seed"] = init_random_seed(None)
    barrier()
    shard = _Loader([dict(idx=[2 * rank, 2 * rank + 1])])  # contiguous shards, as ShardSampler gives
    seen["eval"], _ = evaluate_distributed(_Model(), shard, {})
    # a checkpoint gathers every rank's RNG state; a resume gives each rank its own back
    torch.manual_seed(100 + rank)
    model = torch.nn.Linear(2, 1)
    runner = Runner(model, None, torch.optim.SGD(model.parameters(), lr=0.1), out_dir, max_epochs=1)
    mine = torch.get_rng_state()
    path = os.path.join(out_dir, "rng.pth")
    runner.save_checkpoint(path)
    barrier()
    torch.manual_seed(999)
    runner.resume(path)
    seen["rng_restored"] = bool(torch.equal(torch.get_rng_state(), mine))
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(seen, f)
    dist.destroy_process_group()


def train(rank, world, init_file, cfg_dict):
    """``train_from_config`` as one rank of a gloo group (what a Ray worker runs). A rank whose
    training raises writes ``<init_file>.rank<N>.error`` (the exception's type and message) and
    leaves at once: the interpreter's teardown beside a peer blocked in a collective sometimes
    aborts (SIGABRT) before ``mp.spawn`` has the exception, which it then reports as a signal."""
    init_group(rank, world, init_file, "gloo")
    from raydet.run import train_from_config
    from raydet.config import load_config
    try:
        train_from_config(load_config(cfg_dict), validate=False)
    except Exception as exc:
        with open(f"{init_file}.rank{rank}.error", "w") as f:
            f.write(f"{type(exc).__name__}: {exc}")
        os._exit(1)
    dist.destroy_process_group()


def train_reporting(rank, world, init_file, cfg_dict, out_dir, write_delay_s):
    """``train_from_config`` as one rank of a gloo group, its checkpoint files written in the
    background ``write_delay_s`` slower than the disk allows, with a :class:`ReportHook` whose
    report is a barrier as Ray's is. Writes ``reports{rank}.json``: per report the iteration it
    happened at, the file, the checkpoint's metrics and (rank 0) whether the file was complete."""
    init_group(rank, world, init_file, "gloo")
    import time

    import raydet.engine.checkpoint as ckpt
    from raydet.run import train_from_config
    from raydet.config import load_config
    from raydet.engine import ReportHook
    from raydet.engine.dist import barrier

    save_file = ckpt.save_file

    def slow_save_file(obj, path):
        time.sleep(write_delay_s)
        save_file(obj, path)

    ckpt.save_file = slow_save_file
    seen = []

    class Recorder(ReportHook):
        def report(self, runner, path, metrics=None, name=None, validation=None):
            runner.wait_for_checkpoints()
            complete = None
            if rank == 0:
                complete = ckpt.load_file(path)["meta"]["iter"] == metrics["iter"]
            barrier()
            seen.append(dict(at=runner.progress()[1], path=os.path.basename(path), iter=metrics["iter"],
                             complete=complete))
            self.reported_iter = metrics["iter"]

    reporter = Recorder()
    train_from_config(load_config(cfg_dict), validate=False, on_checkpoint=reporter.on_saved, extra_hooks=[reporter])
    with open(os.path.join(out_dir, f"reports{rank}.json"), "w") as f:
        json.dump(seen, f)
    dist.destroy_process_group()
