"""JobSpec -> batch/v1 Job manifest (pure)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from hpcstate import ConfigError
from hpcstate.backend import JobSpec
from hpcstate_k8s._manifest import (
    SubmitSettings,
    array_shape,
    build_job,
    job_name,
    resolve_settings,
    submission_from_job,
    tag_hash,
)

SETTINGS = SubmitSettings(namespace="batch", image="busybox:1.36")


def container(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def test_command_job() -> None:
    spec = JobSpec(
        command=["python", "train.py", "--epochs", "3"],
        name="Train Model #1",
        environment={"SEED": "7"},
        time_limit=timedelta(minutes=2, milliseconds=1),
        cpus=2,
        memory_bytes=2**30,
        working_directory="/data",
        tag="run-1/item-0",
    )
    job = build_job(spec, tag=spec.tag, settings=SETTINGS)
    assert job["apiVersion"] == "batch/v1"
    assert job["kind"] == "Job"
    assert job["metadata"]["namespace"] == "batch"
    assert job["metadata"]["name"] == job_name(spec, "run-1/item-0")
    assert job["metadata"]["name"].startswith("train-model-1-")
    main = container(job)
    assert main["command"] == ["python", "train.py", "--epochs", "3"]
    assert main["image"] == "busybox:1.36"
    assert main["env"] == [{"name": "SEED", "value": "7"}]
    assert main["workingDir"] == "/data"
    assert main["resources"] == {
        "requests": {"cpu": "2", "memory": str(2**30)},
        "limits": {"memory": str(2**30)},
    }
    assert main["terminationMessagePolicy"] == "FallbackToLogsOnError"
    spec_ = job["spec"]
    assert spec_["activeDeadlineSeconds"] == 121  # rounded up, never cut short
    assert spec_["backoffLimit"] == 0
    assert "ttlSecondsAfterFinished" not in spec_
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    for meta in (job["metadata"], job["spec"]["template"]["metadata"]):
        assert meta["labels"]["hpcstate.io/managed"] == "true"
        assert meta["labels"]["hpcstate.io/tag-hash"] == tag_hash("run-1/item-0")
        assert meta["annotations"]["hpcstate.io/tag"] == "run-1/item-0"
        assert "hpcstate.io/wrapper" not in meta["annotations"]


def test_same_tag_same_name_other_tag_other_name() -> None:
    spec = JobSpec(command=["true"], name="x")
    assert job_name(spec, "a") == job_name(spec, "a")
    assert job_name(spec, "a") != job_name(spec, "b")
    assert len(job_name(JobSpec(command=["true"], name="y" * 200), "a")) <= 63


def test_script_runs_under_sh() -> None:
    job = build_job(JobSpec(script="echo hi\nexit 3\n"), tag="t", settings=SETTINGS)
    assert container(job)["command"] == ["/bin/sh", "-c", "echo hi\nexit 3\n"]


def test_wrapper_wraps_the_command_and_marks_the_job() -> None:
    settings = resolve_settings({"image": "img", "wrapper": True}, {}, namespace="batch")
    job = build_job(JobSpec(command=["sh", "-c", "exit 3"]), tag="t", settings=settings)
    assert container(job)["command"] == [
        "python3",
        "-m",
        "hpcstate_k8s.wrapper",
        "--",
        "sh",
        "-c",
        "exit 3",
    ]
    assert container(job)["terminationMessagePolicy"] == "File"
    assert job["metadata"]["annotations"]["hpcstate.io/wrapper"] == "true"
    assert job["spec"]["template"]["metadata"]["annotations"]["hpcstate.io/wrapper"] == "true"


def test_array_becomes_an_indexed_job_with_per_index_retries() -> None:
    job = build_job(JobSpec(command=["true"], array="0-9%3"), tag="t", settings=SETTINGS)
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 10, 3)
    assert spec["backoffLimitPerIndex"] == 0
    assert "backoffLimit" not in spec
    assert array_shape("0-4") == (5, 5)


@pytest.mark.parametrize("array", ["1-10", "0,2,4", "0-3%0"])
def test_arrays_kubernetes_cannot_express_are_refused(array: str) -> None:
    with pytest.raises(ConfigError, match="array"):
        build_job(JobSpec(command=["true"], array=array), tag="t", settings=SETTINGS)


def test_options_override_defaults() -> None:
    settings = resolve_settings(
        {"image": "a", "backoff_limit": 2, "labels": {"team": "x"}},
        {"image": "b", "ttl_seconds_after_finished": "30", "labels": "tier=batch", "name": "fixed"},
        namespace="default",
    )
    job = build_job(JobSpec(command=["true"]), tag="t", settings=settings)
    assert container(job)["image"] == "b"
    assert job["spec"]["ttlSecondsAfterFinished"] == 30
    assert job["spec"]["backoffLimit"] == 2
    assert job["metadata"]["name"] == "fixed"
    assert job["metadata"]["labels"]["tier"] == "batch"
    assert "team" not in job["metadata"]["labels"]  # a job's labels replace the default


def test_user_manifest_keeps_its_settings_and_gets_the_command() -> None:
    manifest: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"generateName": "x-", "labels": {"app": "sim"}},
        "spec": {
            "backoffLimit": 4,
            "template": {
                "spec": {
                    "restartPolicy": "OnFailure",
                    "initContainers": [{"name": "fetch", "image": "curl"}],
                    "containers": [
                        {"name": "sidecar", "image": "proxy"},
                        {
                            "name": "main",
                            "image": "sim:2",
                            "args": ["--old"],
                            "env": [{"name": "A", "value": "1"}],
                        },
                    ],
                }
            },
        },
    }
    spec = JobSpec(command=["sim", "--fast"], environment={"A": "2"})
    job = build_job(spec, tag="t", settings=SETTINGS, manifest=manifest)
    assert "generateName" not in job["metadata"]  # would defeat idempotent retries
    assert job["metadata"]["labels"]["app"] == "sim"
    assert job["spec"]["backoffLimit"] == 4
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "OnFailure"
    main = pod["containers"][1]
    assert main["image"] == "sim:2"  # the manifest's image wins over the default
    assert main["command"] == ["sim", "--fast"]
    assert "args" not in main
    assert main["env"] == [{"name": "A", "value": "2"}]
    assert pod["containers"][0] == {"name": "sidecar", "image": "proxy"}
    assert job["metadata"]["annotations"]["hpcstate.io/container"] == "main"
    assert manifest["spec"]["template"]["spec"]["containers"][1]["args"] == ["--old"]  # not mutated


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nodes": 2}, "nodes=2"),
        ({"dependencies": ["1"]}, "dependencies"),
        ({"stdout": "out.txt"}, "stdout"),
        ({"partition": "gpu"}, "partition"),
        ({"extra_args": ["--x"]}, "extra_args"),
        ({"time_limit": timedelta(0)}, "time_limit"),
    ],
)
def test_what_kubernetes_cannot_express_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_job(JobSpec(command=["true"], **kwargs), tag="t", settings=SETTINGS)


def test_bad_inputs_get_clear_errors() -> None:
    with pytest.raises(ConfigError, match="needs an image"):
        build_job(JobSpec(command=["true"]), tag="t", settings=SubmitSettings(namespace="n"))
    with pytest.raises(ConfigError, match="kind Job"):
        build_job(JobSpec(command=["true"]), tag="t", settings=SETTINGS, manifest={"kind": "Pod"})
    with pytest.raises(ConfigError, match="namespace"):
        build_job(
            JobSpec(command=["true"]),
            tag="t",
            settings=resolve_settings({"image": "i"}, {"namespace": "a"}, namespace="d"),
            manifest={
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"namespace": "b"},
                "spec": {"template": {"spec": {"containers": [{"name": "c"}]}}},
            },
        )
    with pytest.raises(ConfigError, match="unknown k8s job option"):
        resolve_settings({}, {"imag": "x"}, namespace="d")
    with pytest.raises(ConfigError, match="not a valid Job name"):
        resolve_settings({}, {"name": "Bad_Name"}, namespace="d")
    with pytest.raises(ConfigError, match="backoff_limit"):
        resolve_settings({}, {"backoff_limit": "-1"}, namespace="d")
    with pytest.raises(ConfigError, match="label"):
        resolve_settings({}, {"labels": "a=b c"}, namespace="d")


def test_submission_lists_the_array_tasks() -> None:
    job = build_job(JobSpec(command=["true"], array="0-2"), tag="t", settings=SETTINGS)
    job["metadata"]["uid"] = "u"
    job["metadata"]["creationTimestamp"] = "2026-04-26T18:35:40Z"
    sub = submission_from_job(job)
    name = job["metadata"]["name"]
    assert sub.native_id == f"batch/{name}"
    assert sub.array_task_ids == tuple(f"batch/{name}[{i}]" for i in range(3))
    assert sub.submitted_at is not None
    assert sub.submitted_at.minute == 35


def test_array_tasks_see_hpcstate_array_index() -> None:
    # docs/cli.md: every array task sees HPCSTATE_ARRAY_INDEX. On Kubernetes it is the
    # pod's completion index, by the Downward API (the annotation exists since 1.21).
    env = {"HPCSTATE_ARRAY_INDEX": "7", "OTHER": "x"}  # a stale value is replaced
    job = build_job(
        JobSpec(command=["true"], array="0-2", environment=env), tag="t", settings=SETTINGS
    )
    [container] = job["spec"]["template"]["spec"]["containers"]
    entries = [e for e in container["env"] if e["name"] == "HPCSTATE_ARRAY_INDEX"]
    assert entries == [
        {
            "name": "HPCSTATE_ARRAY_INDEX",
            "valueFrom": {
                "fieldRef": {
                    "apiVersion": "v1",
                    "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']",
                }
            },
        }
    ]
    assert {"name": "OTHER", "value": "x"} in container["env"]
    plain = build_job(JobSpec(command=["true"]), tag="t", settings=SETTINGS)
    [container] = plain["spec"]["template"]["spec"]["containers"]
    assert "env" not in container  # not an array: no index
