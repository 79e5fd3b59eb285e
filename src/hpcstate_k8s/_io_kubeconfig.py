"""Kubeconfig loading: an authenticated ``httpx2`` client and the context's namespace.

Configuration and authentication come from lightkube (kubeconfig files with exec plugins,
client certificates and tokens, or the in-cluster service account); requests go through
the ``httpx2`` client lightkube builds from them. Every failure is a ConfigError that
says which configuration could not be used and why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx2

from hpcstate import ConfigError


def _flag(options: Mapping[str, Any], key: str) -> bool:
    value = options.get(key, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "0", "no", ""):
        return False
    raise ConfigError(f"k8s option {key!r} must be true or false, got {value!r}")


def make_http_client(
    options: Mapping[str, Any], *, request_timeout_s: float
) -> tuple[httpx2.AsyncClient, str]:
    """An authenticated httpx2 client and the context's namespace, via lightkube's config."""
    from lightkube.config import client_adapter
    from lightkube.config.kubeconfig import DEFAULT_KUBECONFIG, SERVICE_ACCOUNT, KubeConfig
    from lightkube.core.exceptions import ConfigError as KubeConfigError

    account = str(options.get("service_account_dir") or SERVICE_ACCOUNT)
    path = options.get("kubeconfig")
    context = options.get("context")
    if context is not None and not isinstance(context, str):
        raise ConfigError(f"k8s option 'context' must be a string, got {context!r}")
    in_cluster = _flag(options, "in_cluster")
    what = f"in-cluster service account ({account})" if in_cluster else "Kubernetes configuration"
    try:
        if in_cluster:
            config = KubeConfig.from_service_account(service_account=account)
        elif path is not None:
            config = KubeConfig.from_file(str(path))
        else:
            config = KubeConfig.from_env(service_account=account, default_config=DEFAULT_KUBECONFIG)
        single = config.get(context_name=context)
    except KubeConfigError as error:
        raise ConfigError(f"k8s: cannot load the {what}: {error}") from None
    except KeyError as error:
        raise ConfigError(
            f"k8s: in-cluster configuration needs the environment variable {error}"
        ) from None
    except (OSError, ValueError) as error:
        raise ConfigError(f"k8s: cannot read the kubeconfig {path}: {error}") from None
    if single is None:
        raise ConfigError("k8s: the kubeconfig has no current context; set options['context']")
    if single.user is None:
        raise ConfigError(f"k8s: kubeconfig context {single.context_name!r} names no user")
    params = client_adapter.ConnectionParams(timeout=httpx2.Timeout(request_timeout_s))
    try:
        http = client_adapter.AsyncClient(single, params)
    except (KubeConfigError, OSError, ValueError) as error:
        raise ConfigError(f"k8s: bad cluster or user settings in the kubeconfig: {error}") from None
    return http, single.namespace
