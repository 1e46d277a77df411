"""Cloud behaviour on a local multi-node Ray (``ray.cluster_utils.Cluster``: a head with no CPUs
and 1-CPU "nodes", all on 127.0.0.1): elastic world sizes and spot preemption.

Each test drives ``raydet.train`` from a driver subprocess (``Cluster.add_node`` must run in the
main thread, and killing or draining nodes must not take the test process with them) and acts
on the driver's log lines, then asserts on the run's log.
"""
import glob
import json
import os
import pickle
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from .test_launch import ray_config

ray = pytest.importorskip("ray")
# one Ray instance at a time on this host: the modules that start Ray run in one pytest-xdist worker,
# in turn (see test_launch)
pytestmark = pytest.mark.xdist_group("ray")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = ("import json, pickle, sys, raydet; cfg = pickle.load(open(sys.argv[1], 'rb')); "
          "res = raydet.train(cfg, address=sys.argv[2], validate=False); "
          "print('RESULT', json.dumps({k: v for k, v in res.metrics.items() if isinstance(v, (int, float))}))")


@pytest.fixture
def cluster(monkeypatch):
    """A head without CPUs (Ray Train's controller, a 0-CPU actor, lands there and survives the
    node changes) and two 1-CPU worker nodes."""
    from ray.cluster_utils import Cluster
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only
    monkeypatch.setenv("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    temp_dir = tempfile.mkdtemp(prefix="rc-", dir="/tmp")  # Ray's socket paths must stay under 108 bytes
    # Ray records the newest cluster's address in $RAY_TMPDIR/ray/: in this test's dir, not the host's /tmp/ray
    os.makedirs(os.path.join(temp_dir, "ray"))
    monkeypatch.setenv("RAY_TMPDIR", temp_dir)
    c = Cluster(initialize_head=True, head_node_args=dict(num_cpus=0, node_ip_address="127.0.0.1",
                                                          temp_dir=temp_dir, include_dashboard=False))
    c.workers = [c.add_node(num_cpus=1, node_ip_address="127.0.0.1") for _ in range(2)]
    c.wait_for_nodes()
    yield c
    c.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


class Driver:
    """``raydet.train(cfg)`` in a subprocess connected to ``address``; its output, line by line."""

    def __init__(self, cfg, address, tmp_path, **env):
        path = tmp_path / "cfg.pkl"
        path.write_bytes(pickle.dumps(cfg))
        env = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1", RAY_DEDUP_LOGS="0", **env)
        self.out = tmp_path / "driver.out"  # everything the driver printed, for a failure's post-mortem
        self.proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(path), address], env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines, self.seen = queue.Queue(), []
        threading.Thread(target=lambda: [self.lines.put(x) for x in self.proc.stdout] + [self.lines.put(None)],
                         daemon=True).start()

    def wait_for(self, pattern, timeout=180):
        """The first match of ``pattern`` in a line printed from now on."""
        end = time.time() + timeout
        while time.time() < end:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.seen.append(line)
            with open(self.out, "a") as f:
                f.write(line)
            found = re.search(pattern, line)
            if found:
                return found
        self.proc.kill()
        pytest.fail(f"no line matching {pattern!r}; the driver printed:\n" + "".join(self.seen[-80:]))

    def finish(self, timeout=240):
        found = self.wait_for(r"^RESULT (.*)", timeout)
        self.proc.wait(timeout=60)
        return json.loads(found.group(1))


def _slow_config(shapes_root, work_dir, tmp_path, **overrides):
    """The tiny 2-worker config, half a second a step (time for the test to act), fixed LR."""
    cfg = ray_config(shapes_root, work_dir, lr_config=dict(policy="fixed"), **overrides)
    cfg["custom_hooks"] = [dict(type="ChaosHook", count_file=str(tmp_path / "count"), delay_s=0.5)]
    return cfg


def _log(work_dir):
    (name,) = [n for n in os.listdir(work_dir) if n.endswith(".log")]
    return open(os.path.join(work_dir, name)).read()


def test_elastic_group_shrinks_and_grows_with_the_lr_following_the_world_batch(cluster, shapes_root, tmp_path):
    """``ray.num_workers=(1, 2)``: a lost node shrinks the group to one worker, its return grows it
    back; each size re-derives the LR (auto_scale_lr) and the schedule's iteration count."""
    work = tmp_path / "run"
    cfg = _slow_config(shapes_root, work, tmp_path, runner=dict(max_epochs=5),
                       auto_scale_lr=dict(enable=True, base_batch_size=8))
    cfg["ray"].update(num_workers=(1, 2), elastic_resize_monitor_interval_s=2, max_failures=3)
    # waiting for the lost node before shrinking costs this long (Ray's default: 60 s)
    driver = Driver(cfg, cluster.address, tmp_path, RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S="8")
    node = driver.wait_for(r"worker group of 2 started \(rank 0 here, pid \d+, node (\w+)\)").group(1)
    per_epoch = {2: int(driver.wait_for(r"Epoch \[1\]\[1/(\d+)\]").group(1))}
    driver.wait_for(r"Epoch \[2\]\[2/")
    cluster.remove_node(next(n for n in cluster.workers if n.node_id != node))
    driver.wait_for(r"worker group of 1 started")
    per_epoch[1] = int(driver.wait_for(r"Epoch \[\d\]\[\d+/(\d+)\]").group(1))  # training on one worker
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    driver.wait_for(r"worker group of 2 started")
    result = driver.finish()
    assert result["done"] and result["epoch"] == 5

    log, out = _log(work), "".join(driver.seen)
    sizes = [int(n) for n in re.findall(r"worker group of (\d) started", out)]
    assert sizes == [2, 1, 2]
    assert [int(n) for n in re.findall(r"world size (\d): \d+ iterations per epoch", log)] == sizes
    scaled = re.findall(r"world size (\d): LR scaled by ([\d.]+) to ([\d.e-]+)", out)
    assert [(int(w), float(s), float(lr)) for w, s, lr in scaled] == [(2, 1, 1e-3), (1, 0.5, 5e-4), (2, 1, 1e-3)]
    # the LR each iteration used, by the iterations per epoch its line shows
    assert per_epoch[1] == 2 * per_epoch[2] - 1  # 13 batches of 4 images: 7 steps on 2 workers, 13 on 1
    steps = re.findall(r"Epoch \[(\d)\]\[(\d+)/(\d+)\]\tlr: ([\d.e+-]+)", log)
    assert {(int(n), float(lr)) for _, _, n, lr in steps} == {(per_epoch[2], 1e-3), (per_epoch[1], 5e-4)}
    # the schedule's iteration count follows the world size: epochs end where they should
    assert re.search(r"iterations counted on world size 1: \d+ -> \d+", log)
    assert re.search(r"iterations counted on world size 2: \d+ -> \d+", log)
    last = [(int(e), int(i), int(n)) for e, i, n, _ in steps][-1]
    assert last == (5, per_epoch[2], per_epoch[2])


def test_spot_preemption_checkpoints_at_once_and_restarts_without_a_failure(cluster, shapes_root, tmp_path):
    """A drain with reason PREEMPTION (a spot reclaim notice) on rank 1's node: raydet checkpoints
    at the next iteration, Ray commits it, training stops; at the deadline the node goes and Ray
    restarts the group on a new one, counting a preemption, not a failure (``max_failures=0``);
    the restart resumes from that checkpoint, so no iteration is done twice."""
    work = tmp_path / "run"
    cfg = _slow_config(shapes_root, work, tmp_path, runner=dict(max_epochs=4))
    cfg["ray"].update(max_failures=0, preemption_check_interval=2)
    driver = Driver(cfg, cluster.address, tmp_path, RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S="1")
    node = driver.wait_for(r"worker group of 2 started \(rank 0 here, pid \d+, node (\w+)\)").group(1)
    driver.wait_for(r"Epoch \[2\]\[2/")
    doomed = next(n for n in cluster.workers if n.node_id != node)
    deadline = time.time() + 12
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "drain-node", "--address", cluster.address,
                    "--node-id", doomed.node_id, "--reason", "DRAIN_NODE_REASON_PREEMPTION",
                    "--reason-message", "spot reclaim", "--deadline-remaining-seconds", "12"], check=True)
    saved = int(driver.wait_for(r"preemption of ranks \[1\]: checkpoint of iter (\d+) committed").group(1))
    driver.wait_for(r"Source: preemption")  # at the deadline Ray ends the attempt, counting a preemption
    assert time.time() >= deadline
    # The cloud takes the node and the autoscaler replaces it. (Killed by the test before Ray's
    # decision, the node's death would count as a failure: a real reclaim marks it preempted.)
    cluster.remove_node(doomed)
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    result = driver.finish()
    assert result["done"] and result["epoch"] == 4

    log = _log(work)
    resumed = re.findall(r"resumed from (\S+) at .*\(completed: \d+ epochs, (\d+) iterations\)", log)
    assert [int(n) for _, n in resumed] == [saved] and f"iter_{saved}" in resumed[0][0]
    executed = [int(line.split()[2]) for line in open(tmp_path / "count") if line.startswith("0 ")]
    schedule = 4 * int(re.search(r"world size 2: (\d+) iterations per epoch", log).group(1))
    assert sorted(executed) == list(range(1, schedule + 1))  # every iteration once: none redone, none lost


FAKE_CLUSTER = """\
cluster_name: raydet-fake
max_workers: 2
upscaling_speed: 1.0
idle_timeout_minutes: 0.25
provider: {{type: fake_multinode, use_node_id_as_ip: true, disable_node_updaters: true,
           disable_launch_config_check: true, gcs_address: "127.0.0.1:{port}"}}
auth: {{}}
docker: {{}}
head_node_type: ray.head.default
available_node_types:
  ray.head.default: {{resources: {{CPU: 0}}, node_config: {{}}, max_workers: 0}}
  ray.worker.cpu: {{resources: {{CPU: 1, object_store_memory: 200000000}}, node_config: {{}},
                   min_workers: 0, max_workers: 2}}
file_mounts: {{}}
cluster_synced_files: []
file_mounts_sync_continuously: false
rsync_exclude: []
rsync_filter: []
initialization_commands: []
setup_commands: []
head_setup_commands: []
worker_setup_commands: []
head_start_ray_commands: []
worker_start_ray_commands: []
"""


def test_autoscaler_adds_the_nodes_a_run_asks_for(shapes_root, tmp_path):
    """A head with no CPUs and Ray's fake multi-node provider (nodes are processes on this
    machine): a 2-worker run's resource request (2 x 1 CPU) makes the autoscaler launch two
    worker nodes, and training runs on them. Only this cluster is stopped afterwards."""
    from .test_cluster import RAY, _free_ports
    gcs, client, agent_http, agent_grpc, metrics, runtime_env = _free_ports(6)
    (tmp_path / "fake.yaml").write_text(FAKE_CLUSTER.format(port=gcs))
    token = tmp_path / "token"
    token.write_text("0" * 32 + secrets.token_hex(16))
    temp_dir = tempfile.mkdtemp(prefix="ra-", dir="/tmp")
    os.makedirs(os.path.join(temp_dir, "ray"))  # the cluster-address file goes there, not to /tmp/ray
    env = dict(os.environ, RAY_TMPDIR=temp_dir, RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1", RAY_AUTH_MODE="token",
               RAY_AUTH_TOKEN_PATH=str(token), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
               RAY_TRAIN_ENABLE_PRINT_PATCH="0")
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", f"--autoscaling-config={tmp_path / 'fake.yaml'}", "--num-cpus=0",
         "--node-ip-address=127.0.0.1", f"--port={gcs}", "--include-dashboard=false",
         f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent_http}",
         f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}",
         f"--runtime-env-agent-port={runtime_env}", f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        cfg = ray_config(shapes_root, tmp_path / "run", runner=dict(max_epochs=1))
        driver = Driver(cfg, f"127.0.0.1:{gcs}", tmp_path, **{k: env[k] for k in (
            "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")})
        node = driver.wait_for(r"worker group of 2 started \(rank 0 here, pid \d+, node (\w+)\)").group(1)
        result = driver.finish()
        assert result["done"]
        monitor = "".join(open(p).read() for p in glob.glob(os.path.join(temp_dir, "session_latest", "logs",
                                                                         "monitor*")))
        (tmp_path / "monitor.log").write_text(monitor)  # for a failure's post-mortem
        assert re.search(r"Adding \d node\(s\) of type ray\.worker\.cpu", monitor)
        launched = set(re.findall(r"\bf{40,}\d*[1-9]\d*\b", monitor))  # fake node ids; the head's ends in 00000
        assert len(launched) == 2, launched  # as many as the run asked for, within max_workers
        assert not node.endswith("00000")  # rank 0 ran on a launched node, not on the (CPU-less) head
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # --block: the head takes its processes (and fake nodes) down
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)
