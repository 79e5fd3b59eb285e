"""Kubeconfig loading: an authenticated ``httpx2`` client and the context's namespace.

Configuration and authentication come from lightkube (kubeconfig files with exec plugins,
client certificates and tokens, or the in-cluster service account); requests go through
the ``httpx2`` client lightkube builds from them. Every failure is a ConfigError that
says which configuration could not be used and why.
"""

from __future__ import annotations

import httpx2

from hpcstate import ConfigError

from ._options import K8sOptions


def make_http_client(options: K8sOptions) -> tuple[httpx2.AsyncClient, str]:
    """An authenticated httpx2 client and the context's namespace, via lightkube's config."""
    from lightkube.config import client_adapter
    from lightkube.config.kubeconfig import DEFAULT_KUBECONFIG, SERVICE_ACCOUNT, KubeConfig
    from lightkube.core.exceptions import ConfigError as KubeConfigError

    account = options.service_account_dir or str(SERVICE_ACCOUNT)
    path, context, in_cluster = options.kubeconfig, options.context, options.in_cluster
    what = f"in-cluster service account ({account})" if in_cluster else "Kubernetes configuration"
    try:
        if in_cluster:
            config = KubeConfig.from_service_account(service_account=account)
        elif path is not None:
            config = KubeConfig.from_file(path)
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
    params = client_adapter.ConnectionParams(timeout=httpx2.Timeout(options.request_timeout_s))
    try:
        http = client_adapter.AsyncClient(single, params)
    except (KubeConfigError, OSError, ValueError) as error:
        raise ConfigError(f"k8s: bad cluster or user settings in the kubeconfig: {error}") from None
    return http, single.namespace
