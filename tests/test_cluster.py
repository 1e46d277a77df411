"""`raydet.train(address=...)` and `ray job submit ... -- python -m raydet train` against a
`ray start --head` cluster on 127.0.0.1 that this test starts (own temp dir, free ports, token
auth on) and stops itself, without touching any other Ray instance."""
import glob
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from .test_launch import ray_config

pytest.importorskip("ray")
# one Ray instance at a time on this host: the modules that start Ray run in one pytest-xdist worker,
# in turn (see test_launch)
pytestmark = pytest.mark.xdist_group("ray")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAY = os.path.join(os.path.dirname(sys.executable), "ray")


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture
def head(tmp_path):
    token = tmp_path / "token"
    token.write_text(secrets.token_hex(32))
    env = dict(os.environ, RAY_AUTH_TOKEN_PATH=str(token), RAY_AUTH_MODE="token",
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_TRAIN_ENABLE_PRINT_PATCH="0",
               PYTHONPATH=REPO)
    env.pop("RAY_ADDRESS", None)
    gcs, dash, agent_http, agent_grpc, metrics, client, runtime_env = _free_ports(7)
    temp_dir = tempfile.mkdtemp(prefix="rd-", dir="/tmp")  # Ray's socket paths must stay under 108 bytes
    # `ray start` records the cluster's address in $RAY_TMPDIR/ray/, where a plain ray.init() on this
    # host would find it and join: in this test's dir, not the host's /tmp/ray (a head killed before
    # it removed the file left it there for later instances to find)
    os.makedirs(os.path.join(temp_dir, "ray"))
    env["RAY_TMPDIR"] = temp_dir
    proc = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--num-cpus=2", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
         f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
         f"--metrics-export-port={metrics}", f"--ray-client-server-port={client}",
         f"--runtime-env-agent-port={runtime_env}", f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 90
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", dash)) == 0:
                break
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("ray head did not start: " + proc.stdout.read().decode()[-2000:])
    yield dict(env=env, gcs=f"127.0.0.1:{gcs}", dashboard=f"http://127.0.0.1:{dash}")
    # --block: the head takes its own processes down on SIGTERM, but waits ~10 s for them; the
    # whole group is this test's own, so after a moment it is killed outright
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    shutil.rmtree(temp_dir, ignore_errors=True)


def test_python_api_and_job_submit_against_a_head(head, shapes_root, tmp_path):
    from raydet.config import dump_config, load_config
    cfg = ray_config(shapes_root, tmp_path / "api_run", runner=dict(max_epochs=1))
    cfg_path = str(tmp_path / "cfg.py")
    dump_config(load_config(cfg), cfg_path)
    code = ("import raydet, sys; r = raydet.train(sys.argv[1], address=sys.argv[2]); "
            "print('API_OK', r.metrics['done'], r.path)")
    out = subprocess.run([sys.executable, "-c", code, cfg_path, head["gcs"]], env=head["env"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "API_OK True" in out.stdout, out.stdout[-2000:] + out.stderr[-3000:]
    assert (tmp_path / "api_run" / "latest.pth").exists()

    # ray job submit with a working dir holding the package and the config
    job_dir = tmp_path / "job"
    shutil.copytree(os.path.join(REPO, "raydet"), job_dir / "raydet")
    shutil.copy(cfg_path, job_dir / "cfg.py")
    work = tmp_path / "job_run"
    env = dict(head["env"], RAY_ADDRESS=head["dashboard"])
    submit = subprocess.run(
        [RAY, "job", "submit", "--submission-id", "raydet-test", "--working-dir", str(job_dir), "--",
         sys.executable, "-m", "raydet", "train", "cfg.py", "--work-dir", str(work)],
        env=env, capture_output=True, text=True, timeout=400)
    status = subprocess.run([RAY, "job", "status", "raydet-test"], env=env, capture_output=True, text=True)
    assert re.search(r"Job 'raydet-test' succeeded|SUCCEEDED", status.stdout), submit.stdout[-3000:] + submit.stderr[-2000:]
    assert "final metrics" in submit.stdout
    assert (work / "latest.pth").exists() and glob.glob(str(work / "*.log.json"))
    assert (work / "checkpoint_manager_snapshot.json").exists()
