"""Offline validation of cluster/: Ray's own launcher-config checks and strict KubeRay schemas."""
import copy
import functools
import os

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRDS = os.environ.get("RAYDET_KUBERAY_CRDS", os.path.join(os.path.dirname(REPO), "shared", "kuberay-crds"))


def _launcher(name):
    return yaml.safe_load(open(os.path.join(REPO, "cluster", name)))


def _validate_launcher(cfg):
    from ray.autoscaler._private.util import prepare_config, validate_config
    validate_config(prepare_config(copy.deepcopy(cfg)))


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_launcher_yaml_validates_and_rejects_a_typo(name):
    cfg = _launcher(name)
    _validate_launcher(cfg)
    assert cfg["available_node_types"][cfg["head_node_type"]]["resources"] == {"CPU": 0}
    assert any(t.get("resources", {}).get("GPU") for t in cfg["available_node_types"].values())
    bad = copy.deepcopy(cfg)
    bad["max_workerz"] = bad.pop("max_workers")
    with pytest.raises(Exception, match="max_workerz"):
        _validate_launcher(bad)


@functools.lru_cache(maxsize=None)
def _validator(kind):
    """A strict validator for the CRD's v1 schema (parsed once; the CRDs are megabytes of YAML)."""
    import jsonschema
    schema = _strict(_schema(kind))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _schema(kind):
    path = os.path.join(CRDS, f"ray.io_{kind}.yaml")
    if not os.path.exists(path):
        pytest.skip(f"KubeRay CRD schemas not found at {CRDS} (set RAYDET_KUBERAY_CRDS)")
    with open(path) as f:
        crd = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def _strict(schema):
    """Forbid unknown fields wherever the schema lists properties (kubectl --validate=strict)."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [_strict(v) for v in schema]
    return schema


def _check(manifest, kind):
    import jsonschema
    error = jsonschema.exceptions.best_match(
        _validator(kind).iter_errors({k: v for k, v in manifest.items() if k != "metadata"}))
    if error is not None:
        raise error


@pytest.mark.parametrize("name,kind", [("raycluster.yaml", "rayclusters"), ("rayjob.yaml", "rayjobs")])
def test_kuberay_manifest_validates_strictly_and_rejects_a_typo(name, kind):
    import jsonschema
    manifest = yaml.safe_load(open(os.path.join(REPO, "cluster", "kuberay", name)))
    _check(manifest, kind)
    bad = copy.deepcopy(manifest)
    spec = bad["spec"]["rayClusterSpec"] if kind == "rayjobs" else bad["spec"]
    spec["enableInTreeAutoscalling"] = spec.pop("enableInTreeAutoscaling")
    with pytest.raises(jsonschema.ValidationError, match="enableInTreeAutoscalling"):
        _check(bad, kind)


def test_the_jobs_api_is_never_public():
    """The dashboard serves the Jobs API (running code on the cluster): the VM launchers bind it to
    the head's loopback (reached with `ray dashboard`'s SSH forward), KubeRay keeps it behind a
    ClusterIP service (reached with `kubectl port-forward`), and nothing turns token auth off."""
    for name in ("aws.yaml", "gcp.yaml"):
        starts = " ".join(_launcher(name)["head_start_ray_commands"])
        assert "--dashboard-host=127.0.0.1" in starts and "0.0.0.0" not in starts, name
    for name in ("raycluster.yaml", "rayjob.yaml"):
        text = open(os.path.join(REPO, "cluster", "kuberay", name)).read()
        doc = yaml.safe_load(text)
        spec = doc["spec"].get("rayClusterSpec", doc["spec"])
        assert spec["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP", name
        assert "LoadBalancer" not in text and "NodePort" not in text and "Ingress" not in text, name
    for path in ("aws.yaml", "gcp.yaml", "kuberay/raycluster.yaml", "kuberay/rayjob.yaml"):
        assert "RAY_AUTH_MODE=disabled" not in open(os.path.join(REPO, "cluster", path)).read()
