"""JobSpec -> batch/v1 Job manifest, and the settings that shape it. Pure: no I/O.

A Job is built from the JobSpec alone (``image`` required), or from a user's Job manifest
with the JobSpec's command put into its payload container. Either way hpcstate adds its
labels (``hpcstate.io/managed``, ``hpcstate.io/tag-hash``, also on the pod template so
one label-selected watch sees the pods) and annotations (the raw tag, the wrapper flag,
the payload container's name).
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from attrs import field, frozen

from hpcstate import ConfigError, ParseError, expand_array_spec
from hpcstate.backend import JobSpec, Submission

from ._parse import (
    CONTAINER_ANNOTATION,
    MANAGED_LABEL,
    TAG_ANNOTATION,
    TAG_HASH_LABEL,
    WRAPPER_ANNOTATION,
    read_job,
)

_LABEL_NAME = re.compile(r"\A[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?\Z")
_LABEL_KEY = re.compile(
    r"\A(?:[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?\Z"
)
_LABEL_VALUE = re.compile(r"\A(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?\Z")
_PULL_POLICIES = frozenset({"Always", "IfNotPresent", "Never"})
_PROPAGATION = frozenset({"Foreground", "Background"})
DEFAULT_WRAPPER_COMMAND = ("python3", "-m", "hpcstate_k8s.wrapper")
#: Every array task sees its index here (docs/cli.md), as on the other backends: on
#: Kubernetes it is the pod's completion index, by the Downward API (the annotation has
#: been there since 1.21; 1.28+ also sets the label that JOB_COMPLETION_INDEX reads).
ARRAY_INDEX_ENV = "HPCSTATE_ARRAY_INDEX"
ARRAY_INDEX_FIELD = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

#: Options read from the backend configuration and, per job, from JobSpec.options.
SUBMIT_OPTIONS = frozenset(
    {
        "namespace",
        "image",
        "name",
        "labels",
        "wrapper",
        "wrapper_command",
        "backoff_limit",
        "ttl_seconds_after_finished",
        "service_account",
        "container",
        "image_pull_policy",
        "manifest",
    }
)


def _mapping(value: Mapping[str, str]) -> Mapping[str, str]:
    return dict(value)


@frozen(kw_only=True)
class SubmitSettings:
    """Everything besides the JobSpec that decides the manifest."""

    namespace: str  # where the Job goes unless the manifest says otherwise
    namespace_explicit: bool = False  # the user chose it (a manifest may not disagree)
    image: str | None = None
    name: str | None = None  # a fixed Job name instead of one derived from the tag
    labels: Mapping[str, str] = field(factory=dict, converter=_mapping)
    wrapper: bool = False
    wrapper_command: tuple[str, ...] = DEFAULT_WRAPPER_COMMAND
    backoff_limit: int = 0
    ttl_seconds_after_finished: int | None = None
    service_account: str | None = None
    container: str = "main"
    image_pull_policy: str | None = None


def _bool(value: object, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off", ""):
        return False
    raise ConfigError(f"k8s option {key!r} must be true or false, got {value!r}")


_INT32_MAX = 2**31 - 1  # the Job fields these options fill are int32


def _digits(text: str) -> int | None:
    """ASCII digits only ("²" and "٣" are not numbers here), short enough for int()."""
    text = text.strip()
    if not text or not text.isascii() or not text.isdigit() or len(text) > 18:
        return None
    return int(text)


def _int(value: object, key: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"k8s option {key!r} must be an integer, got {value!r}")
    number = value if isinstance(value, int) else _digits(value) if isinstance(value, str) else None
    if number is None:
        raise ConfigError(f"k8s option {key!r} must be an integer, got {_shown(value)}")
    if number < minimum:
        raise ConfigError(f"k8s option {key!r} must be >= {minimum}, got {number}")
    if number > _INT32_MAX:
        raise ConfigError(f"k8s option {key!r} must be <= {_INT32_MAX}, got {_shown(number)}")
    return number


def _shown(value: object) -> str:
    if isinstance(value, int) and value.bit_length() > 64:
        return f"a {value.bit_length()}-bit number"  # str() of a huge int can raise
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "..."


def _str(value: object, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"k8s option {key!r} must be a non-empty string, got {value!r}")
    return value.strip()


def parse_labels(value: object, key: str = "labels") -> dict[str, str]:
    """``"team=a,tier=batch"`` (or a mapping from a config file) -> labels, validated."""
    pairs: dict[str, str] = {}
    if isinstance(value, Mapping):
        items = [(str(k), str(v)) for k, v in value.items()]
    elif isinstance(value, str):
        items = []
        for part in value.split(","):
            if not part.strip():
                continue
            name, sep, label = part.partition("=")
            if not sep:
                raise ConfigError(f"k8s option {key!r}: expected KEY=VALUE, got {part.strip()!r}")
            items.append((name.strip(), label.strip()))
    else:
        raise ConfigError(f"k8s option {key!r} must be KEY=VALUE,... or a table, got {value!r}")
    for name, label in items:
        if not _LABEL_KEY.match(name):
            raise ConfigError(f"k8s option {key!r}: {name!r} is not a valid label key")
        if not _LABEL_VALUE.match(label):
            raise ConfigError(f"k8s option {key!r}: {label!r} is not a valid label value")
        pairs[name] = label
    return pairs


def resolve_settings(
    defaults: Mapping[str, Any], options: Mapping[str, Any], *, namespace: str
) -> SubmitSettings:
    """Backend-config defaults overlaid with one job's options. Raises ConfigError."""
    merged = {**{k: v for k, v in defaults.items() if k in SUBMIT_OPTIONS}, **options}
    unknown = sorted(set(options) - SUBMIT_OPTIONS)
    if unknown:
        known = ", ".join(sorted(SUBMIT_OPTIONS))
        raise ConfigError(f"unknown k8s job option(s) {', '.join(unknown)}; known: {known}")
    name = merged.get("name")
    if name is not None:
        name = _str(name, "name")
        if not _LABEL_NAME.match(name):
            raise ConfigError(
                f"k8s option 'name': {name!r} is not a valid Job name (lowercase letters, "
                "digits and '-', at most 63 characters, starting and ending alphanumeric)"
            )
    pull = merged.get("image_pull_policy")
    if pull is not None and pull not in _PULL_POLICIES:
        raise ConfigError(
            f"k8s option 'image_pull_policy' must be one of {sorted(_PULL_POLICIES)}, got {pull!r}"
        )
    wrapper_command = merged.get("wrapper_command")
    command: tuple[str, ...]
    if wrapper_command is None:
        command = DEFAULT_WRAPPER_COMMAND
    elif isinstance(wrapper_command, str):
        command = tuple(shlex.split(wrapper_command))
    elif isinstance(wrapper_command, list | tuple) and all(
        isinstance(x, str) for x in wrapper_command
    ):
        command = tuple(wrapper_command)
    else:
        raise ConfigError(
            f"k8s option 'wrapper_command' must be a command line, got {wrapper_command!r}"
        )
    if not command:
        raise ConfigError("k8s option 'wrapper_command' is empty")
    ttl = merged.get("ttl_seconds_after_finished")
    explicit_ns = merged.get("namespace")
    return SubmitSettings(
        namespace=_str(explicit_ns, "namespace") if explicit_ns is not None else namespace,
        namespace_explicit=explicit_ns is not None,
        image=_str(merged["image"], "image") if merged.get("image") is not None else None,
        name=name,
        labels=parse_labels(merged.get("labels") or {}),
        wrapper=_bool(merged.get("wrapper", False), "wrapper"),
        wrapper_command=command,
        backoff_limit=_int(merged.get("backoff_limit", 0), "backoff_limit"),
        ttl_seconds_after_finished=None if ttl is None else _int(ttl, "ttl_seconds_after_finished"),
        service_account=_str(merged["service_account"], "service_account")
        if merged.get("service_account") is not None
        else None,
        container=_str(merged.get("container", "main"), "container"),
        image_pull_policy=pull,
    )


def propagation_policy(value: object) -> str:
    """How cancel deletes a Job's pods: Foreground (default) or Background."""
    if value is None:
        return "Foreground"
    if not isinstance(value, str) or value not in _PROPAGATION:
        raise ConfigError(
            f"k8s option 'propagation_policy' must be Foreground or Background, got {value!r}"
        )
    return value


def _digest(tag: str) -> str:
    return hashlib.sha256(tag.encode("utf-8")).hexdigest()


def tag_hash(tag: str) -> str:
    """The label value standing for a tag (tags need not be valid label values)."""
    return _digest(tag)[:32]


def job_name(spec: JobSpec, tag: str) -> str:
    """A deterministic Job name: a retried submit of the same tag names the same Job."""
    slug = re.sub(r"[^a-z0-9-]+", "-", spec.name.lower()).strip("-")[:40].strip("-")
    return f"{slug or 'hpcstate'}-{_digest(tag)[:10]}"


def _argv(spec: JobSpec) -> tuple[str, ...]:
    if spec.command:
        return spec.command
    if spec.script is not None:
        return ("/bin/sh", "-c", spec.script)
    if spec.script_path is not None:
        return ("/bin/sh", spec.script_path)
    raise ConfigError("a JobSpec needs a command, a script or a script_path")


def _refuse_unsupported(spec: JobSpec) -> None:
    problems = []
    if spec.nodes is not None and spec.nodes > 1:
        problems.append(f"nodes={spec.nodes} (a Job's pod runs on one node)")
    if spec.tasks is not None and spec.tasks > 1:
        problems.append(f"tasks={spec.tasks} (use array for several pods)")
    for label, value in (
        ("partition", spec.partition),
        ("account", spec.account),
        ("stdout", spec.stdout),
        ("stderr", spec.stderr),
    ):
        if value:
            problems.append(f"{label}={value!r}")
    if spec.dependencies:
        problems.append(f"dependencies={list(spec.dependencies)!r}")
    if spec.extra_args:
        problems.append(f"extra_args={list(spec.extra_args)!r} (use options or a manifest)")
    if problems:
        raise ConfigError(
            "the k8s backend cannot express: " + "; ".join(problems) + " (container output "
            "goes to the pod log; other settings belong in a Job manifest: options['manifest'])"
        )


def array_shape(spec: str) -> tuple[int, int]:
    """``"0-9%2"`` -> (completions 10, parallelism 2). Indexed Jobs number tasks 0..N-1."""
    try:
        indexes = expand_array_spec(spec)
    except ParseError as error:
        raise ConfigError(f"bad array specification {spec!r}: {error}") from None
    if indexes != tuple(range(len(indexes))):
        raise ConfigError(
            f"array {spec!r}: Kubernetes Indexed Jobs number their tasks 0..N-1 without gaps; "
            f"use '0-{len(indexes) - 1}' and map the index (JOB_COMPLETION_INDEX) yourself"
        )
    parallelism = len(indexes)
    _, sep, throttle = spec.partition("%")
    if sep:
        limit = _digits(throttle)
        if limit is None or limit < 1:
            raise ConfigError(f"array {spec!r}: the throttle after '%' must be a positive integer")
        parallelism = min(limit, len(indexes))
    return len(indexes), parallelism


def _object(value: object, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"Job manifest: {what} must be an object, got {type(value).__name__}")
    return value


def _payload_container(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    containers = pod_spec.get("containers")
    if not isinstance(containers, list) or not containers:
        raise ConfigError("Job manifest: spec.template.spec.containers must be a non-empty list")
    for i, container in enumerate(containers):
        if not isinstance(container, dict):
            raise ConfigError(f"Job manifest: spec.template.spec.containers[{i}] must be an object")
    chosen: dict[str, Any] = next((c for c in containers if c.get("name") == name), containers[0])
    return chosen


def build_job(
    spec: JobSpec,
    *,
    tag: str,
    settings: SubmitSettings,
    manifest: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The Job to create. Raises ConfigError naming what cannot be expressed or is wrong."""
    _refuse_unsupported(spec)
    argv = _argv(spec)
    if settings.wrapper:
        argv = (*settings.wrapper_command, "--", *argv)
    if manifest is not None:
        job = copy.deepcopy(dict(manifest))
        if job.get("apiVersion") != "batch/v1" or job.get("kind") != "Job":
            raise ConfigError(
                "Job manifest: expected apiVersion batch/v1 and kind Job, got "
                f"{job.get('apiVersion')!r} {job.get('kind')!r}"
            )
    else:
        job = {"apiVersion": "batch/v1", "kind": "Job"}
    meta = job["metadata"] = _object(job.get("metadata"), "metadata")
    job_spec = job["spec"] = _object(job.get("spec"), "spec")
    template = job_spec["template"] = _object(job_spec.get("template"), "spec.template")
    template_meta = template["metadata"] = _object(
        template.get("metadata"), "spec.template.metadata"
    )
    pod_spec = template["spec"] = _object(template.get("spec"), "spec.template.spec")
    if manifest is None:
        pod_spec["containers"] = [{"name": settings.container}]
        pod_spec["restartPolicy"] = "Never"
    container = _payload_container(pod_spec, settings.container)
    container.setdefault("name", settings.container)

    # Where and under which name.
    manifest_ns = meta.get("namespace")
    if manifest_ns is not None and not isinstance(manifest_ns, str):
        raise ConfigError("Job manifest: metadata.namespace must be a string")
    if manifest_ns and settings.namespace_explicit and manifest_ns != settings.namespace:
        raise ConfigError(
            f"the Job manifest says namespace {manifest_ns!r} but the options say "
            f"{settings.namespace!r}; remove one"
        )
    meta["namespace"] = manifest_ns or settings.namespace
    if settings.name is not None:
        meta["name"] = settings.name
    elif not meta.get("name"):
        meta["name"] = job_name(spec, tag)
    meta.pop("generateName", None)  # a generated name defeats idempotent retries

    labels = {**settings.labels, MANAGED_LABEL: "true", TAG_HASH_LABEL: tag_hash(tag)}
    annotations = {TAG_ANNOTATION: tag, CONTAINER_ANNOTATION: str(container["name"])}
    if settings.wrapper:
        annotations[WRAPPER_ANNOTATION] = "true"
    for target, what in ((meta, "metadata"), (template_meta, "spec.template.metadata")):
        target["labels"] = {**_object(target.get("labels"), f"{what}.labels"), **labels}
        target["annotations"] = {
            **_object(target.get("annotations"), f"{what}.annotations"),
            **annotations,
        }

    # The payload.
    if settings.image is not None and (manifest is None or not container.get("image")):
        container["image"] = settings.image
    if not container.get("image"):
        raise ConfigError("the k8s backend needs an image: set options['image'] (or a manifest's)")
    container["command"] = list(argv)
    container.pop("args", None)
    if spec.environment:
        env = [
            e
            for e in container.get("env") or []
            if not (isinstance(e, dict) and e.get("name") in spec.environment)
        ]
        env.extend({"name": k, "value": v} for k, v in spec.environment.items())
        container["env"] = env
    if spec.working_directory:
        container["workingDir"] = spec.working_directory
    if spec.cpus is not None or spec.memory_bytes is not None:
        resources = container["resources"] = _object(container.get("resources"), "resources")
        requests = resources["requests"] = _object(resources.get("requests"), "resources.requests")
        if spec.cpus is not None:
            requests["cpu"] = str(spec.cpus)
        if spec.memory_bytes is not None:
            limits = resources["limits"] = _object(resources.get("limits"), "resources.limits")
            requests["memory"] = limits["memory"] = str(spec.memory_bytes)
    if settings.image_pull_policy is not None:
        container["imagePullPolicy"] = settings.image_pull_policy
    # With the wrapper only its own file is trusted: a log line must never pass for it.
    container["terminationMessagePolicy"] = "File" if settings.wrapper else "FallbackToLogsOnError"
    if settings.service_account is not None:
        pod_spec["serviceAccountName"] = settings.service_account

    # How it runs.
    if spec.time_limit is not None:
        seconds = math.ceil(spec.time_limit.total_seconds())
        if seconds < 1:
            raise ConfigError(f"time_limit must be at least 1 s, got {spec.time_limit}")
        job_spec["activeDeadlineSeconds"] = seconds
    if settings.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = settings.ttl_seconds_after_finished
    if spec.array is not None:
        completions, parallelism = array_shape(spec.array)
        job_spec["completionMode"] = "Indexed"
        job_spec["completions"] = completions
        job_spec["parallelism"] = parallelism
        # Array tasks are independent, as on Slurm: each index gets its own retries.
        if "backoffLimit" not in job_spec:
            job_spec.setdefault("backoffLimitPerIndex", settings.backoff_limit)
        env = [
            e
            for e in container.get("env") or []
            if not (isinstance(e, dict) and e.get("name") == ARRAY_INDEX_ENV)
        ]
        env.append(
            {
                "name": ARRAY_INDEX_ENV,
                "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": ARRAY_INDEX_FIELD}},
            }
        )
        container["env"] = env
    else:
        job_spec.setdefault("backoffLimit", settings.backoff_limit)
    return job


def submission_from_job(obj: object) -> Submission:
    """The Submission for a created (or found) Job object. Raises ParseError."""
    job = read_job(obj)
    base = f"{job.namespace}/{job.name}"
    tasks: tuple[str, ...] = ()
    if job.indexed and job.completions is not None:
        tasks = tuple(f"{base}[{i}]" for i in range(job.completions))
    return Submission(native_id=base, array_task_ids=tasks, submitted_at=job.meta.created_at)


def _annotated_tag(obj: object) -> str | None:
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    notes = meta.get("annotations") if isinstance(meta, Mapping) else None
    tag = notes.get(TAG_ANNOTATION) if isinstance(notes, Mapping) else None
    return tag if isinstance(tag, str) else None


def submission_for_tag(objects: Sequence[object], tag: str) -> Submission | None:
    """The Job a submit with this tag created, among LISTed Jobs (its tag-hash label
    selected them; its tag annotation must be the tag itself), or None. The oldest wins
    if there are several. Raises ParseError if one carrying the tag cannot be read."""
    mine = [(read_job(obj), obj) for obj in objects if _annotated_tag(obj) == tag]
    if not mine:
        return None
    oldest = min(mine, key=lambda pair: pair[0].meta.created_at or _EPOCH)
    return submission_from_job(oldest[1])
