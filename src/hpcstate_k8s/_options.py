"""The k8s backend's options: one typed record, checked once, when the config is loaded.

Pure: no I/O. A ``[backends.NAME]`` table with ``kind = "k8s"`` is structured into
:class:`K8sOptions` by ``hpcstate.options.structure_options`` (when the config file is
loaded, and again by ``make_backend``): an unknown key, or a value that is not of the
field's TOML type, is refused there, naming the key. Ranges and words are checked by the
validators below; the submit defaults (image, labels, wrapper...) by the same rules as a
job's own options (``_manifest.resolve_settings``), so a bad default fails at load, not
at the first submit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from attrs import Attribute, field, frozen

from ._manifest import SUBMIT_OPTIONS, resolve_settings


def _positive(instance: object, attribute: Attribute[float], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name}: must be > 0, got {value}")


def _argv(value: Sequence[str] | str | None) -> tuple[str, ...] | str | None:
    """wrapper_command: an array (kept as a tuple), or one shell-quoted command line."""
    if value is None or isinstance(value, str):
        return value
    return tuple(value)


@frozen(kw_only=True)
class K8sOptions:
    """Every option of a k8s backend, with its default. Durations are seconds (``*_s``).

    The submit defaults (``namespace`` to ``manifest``) are what a job gets unless its own
    options (``JobSpec.options``) say otherwise.
    """

    # Where the API server is, and who we are (lightkube reads the configuration).
    kubeconfig: str | None = None  # lightkube's search: in-cluster, $KUBECONFIG, ~/.kube
    context: str | None = None  # the kubeconfig's current context
    in_cluster: bool = False  # the pod's service account (token, CA, namespace)
    service_account_dir: str | None = None  # lightkube's: /var/run/secrets/...
    # How we talk to it.
    propagation_policy: Literal["Foreground", "Background"] = "Foreground"  # cancel's DELETE
    request_timeout_s: float = field(default=30.0, validator=_positive)
    watch_timeout_s: float = field(default=290.0, validator=_positive)  # whole seconds used
    retry_initial_s: float = field(default=0.5, validator=_positive)
    retry_max_s: float = field(default=30.0, validator=_positive)
    # Submit defaults.
    namespace: str | None = None  # default: the context's namespace, else "default"
    image: str | None = None
    name: str | None = None  # a fixed Job name (default: derived from the tag)
    labels: Mapping[str, str] | str | None = None  # a table, or "key=value,key2=value2"
    wrapper: bool | None = None  # run the payload under hpcstate_k8s.wrapper
    wrapper_command: tuple[str, ...] | str | None = field(default=None, converter=_argv)
    backoff_limit: int | None = None  # default 0: a failed pod fails the Job
    ttl_seconds_after_finished: int | None = None
    service_account: str | None = None
    container: str | None = None  # the payload container's name (default "main")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    manifest: str | None = None  # a Job as JSON text, or a JSON/YAML file's path

    def __attrs_post_init__(self) -> None:
        # The submit defaults' own rules (label syntax, Job name, int32 ranges...).
        resolve_settings(self.submit_defaults(), {}, namespace="default")

    def submit_defaults(self) -> dict[str, Any]:
        """The submit options this config sets (the unset ones are left out)."""
        values = {key: getattr(self, key) for key in sorted(SUBMIT_OPTIONS)}
        return {key: value for key, value in values.items() if value is not None}

    @property
    def watch_timeout_whole_s(self) -> int:
        """Each watch request's ``timeoutSeconds`` (the API server takes whole seconds)."""
        return int(self.watch_timeout_s)
