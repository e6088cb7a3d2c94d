"""deploy/: the KubeRay manifests parse, name what KubeRay needs, and say what this project accepts (not run here:
no Kubernetes in these sessions; deploy/README.md)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text(encoding="utf-8"))


def _containers(cluster: dict) -> list[dict]:
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def _check_cluster(cluster: dict) -> None:
    import ray

    assert cluster["rayVersion"] == ray.__version__, "the manifests' Ray must be the one the project runs"
    assert cluster["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    for container in _containers(cluster):
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["RAY_USAGE_STATS_ENABLED"] == "0" and env["HF_HUB_OFFLINE"] == "1"
        assert container["image"].startswith("registry.example.com/moderation:")
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts["/models"]["readOnly"] and mounts["/etc/moderation"]["readOnly"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        volumes = {v["name"]: v for v in group["template"]["spec"]["volumes"]}
        assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "moderation-models"
        assert volumes["policy"]["configMap"]["name"] == "moderation-policy"


def test_rayservice_serves_the_apps_builder_with_arguments_it_accepts():
    from serving.schemas import ServeArgs

    doc = _load("rayservice.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayService")
    serve_config = yaml.safe_load(doc["spec"]["serveConfigV2"])
    (app,) = serve_config["applications"]
    assert app["import_path"] == "serving.app:build_app"
    args = ServeArgs.model_validate(app["args"])  # a wrong name or type here would fail the deploy
    assert args.model_dir == "/models/current" and args.policy == "/etc/moderation/policy.json"
    assert [d["name"] for d in app["deployments"]] == ["ModerationAPI"]  # the fused topology's deployment
    assert serve_config["http_options"]["port"] == 8000
    _check_cluster(doc["spec"]["rayClusterConfig"])
    assert doc["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


def test_rayjob_runs_a_moderation_score_command_the_cli_accepts():
    from moderation.cli import build_parser

    doc = _load("rayjob-batch.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayJob")
    spec = doc["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["submissionMode"] == "K8sJobMode"
    argv = shlex.split(spec["entrypoint"])
    assert argv[0] == "moderation"
    args = build_parser().parse_args(argv[1:])  # exits (SystemExit) on an option `moderation score` lacks
    assert (args.engine, args.ray_address, args.model) == ("ray", "auto", "/models/current")
    assert args.policy == "/etc/moderation/policy.json" and args.out.startswith("/data/")
    _check_cluster(spec["rayClusterSpec"])
    dumps = [v for v in spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["volumes"] if v["name"] == "dumps"]
    assert dumps and dumps[0]["persistentVolumeClaim"]["claimName"] == "moderation-dumps"


def test_serve_on_a_cluster_refuses_the_haproxy_request_path_before_anything_starts(capsys):
    """`--ray-address` drives the cluster's own proxy; `--proxy haproxy` needs the local Ray it would start."""
    from moderation.cli import build_parser

    args = build_parser().parse_args(["serve", "--ray-address", "127.0.0.1:1", "--proxy", "haproxy"])
    assert args.ray_address == "127.0.0.1:1"
    assert args.func(args) == 2
    assert "--proxy haproxy starts with a local Ray" in capsys.readouterr().err
