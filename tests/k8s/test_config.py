"""Backend info, configuration (kubeconfig and in-cluster over TLS) and config errors."""

from __future__ import annotations

import json
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hpcstate import ConfigError, State, registry
from hpcstate.backend import API_VERSION, BackendConfig, JobSpec
from hpcstate_k8s import BACKEND

from .conftest import collect
from .fake_apiserver import FakeCluster


def test_backend_info() -> None:
    caps = BACKEND.capabilities
    assert (BACKEND.name, BACKEND.api_version) == ("k8s", API_VERSION)
    assert (caps.array_jobs, caps.lossless_signals, caps.accounting) == (True, False, False)
    assert (caps.push, caps.adopt, caps.idempotent_submit, caps.cancel) == (True, True, True, True)
    assert (caps.report_files, caps.output, caps.shares_facts, caps.host_local) == (False,) * 4
    assert "lightkube" in BACKEND.requires
    assert BACKEND.install_hint == "pip install 'hpcstate[k8s]'"


def test_registry_finds_the_entry_point() -> None:
    assert registry.load("k8s") is BACKEND


def make(options: dict[str, Any], *, host: str | None = None) -> Any:
    return BACKEND.make_backend(BackendConfig(name="k8s", kind="k8s", host=host, options=options))


def test_config_errors_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        make({"kubeconfig": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="'host'"):
        make({}, host="login1")
    config = tmp_path / "kubeconfig"
    config.write_text(
        json.dumps(
            {
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c"}}],
                "current-context": "x",
            }
        )
    )
    with pytest.raises(ConfigError, match="names no user"):
        make({"kubeconfig": str(config)})
    with pytest.raises(ConfigError, match="not found"):
        make({"kubeconfig": str(config), "context": "nope"})
    with pytest.raises(ConfigError, match="in-cluster"):
        make({"in_cluster": True, "service_account_dir": str(tmp_path / "none")})


def test_unknown_options_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    with pytest.raises(ConfigError, match="imgae: unknown option"):
        make({"kubeconfig": str(path), "imgae": "x"})
    with pytest.raises(ConfigError, match="propagation_policy"):
        make({"kubeconfig": str(path), "propagation_policy": "Orphan"})


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    cert, key = tmp_path / "ca.crt", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context, cert


@pytest.fixture
async def tls_cluster(tls: tuple[ssl.SSLContext, Path]) -> AsyncIterator[FakeCluster]:
    fake = FakeCluster(token="sa-token")
    await fake.start(ssl_context=tls[0])
    try:
        yield fake
    finally:
        await fake.stop()


async def test_in_cluster_service_account_over_tls(
    tls_cluster: FakeCluster,
    tls: tuple[ssl.SSLContext, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("sa-token\n")
    (account / "namespace").write_text("jobs-ns")
    (account / "ca.crt").write_bytes(tls[1].read_bytes())
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(tls_cluster.port))
    backend = make({"in_cluster": True, "service_account_dir": str(account), "image": "busybox"})
    try:
        sub = await backend.submit(JobSpec(command=["true"], tag="in-cluster"))
        assert sub.native_id.startswith("jobs-ns/")  # the service account's namespace
        seen = await collect(backend.watch([sub.native_id]))
    finally:
        await backend.close()
    assert seen[-1].state is State.COMPLETED
    assert tls_cluster.scheme == "https"
