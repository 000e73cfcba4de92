"""Endpoints by name: refused at registration when they resolve inward, and refused again on
every connection, so a name re-pointed after registration (DNS rebinding) reaches nothing."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from tests.e2e.conftest import ALL_OPS, STATIC_KEY_ID, STATIC_SECRET, boto, put_static_secret
from tests.test_netguard import _CountingServer

PUBLIC = "93.184.216.34"


class Dns:
    def __init__(self) -> None:
        self.answers: dict[str, list[str]] = {}
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "unknown")
        return self.answers[host]


def bucket(name: str, endpoint: str) -> dict[str, object]:
    return {
        "name": name,
        "provider": "minio",
        "endpoint": endpoint,
        "auth_mode": "static",
        "secret_ref": "aws-sm://gen3/bucket-registry/minio-abc",
        "owner_project": "ABC",
        "data_upload_allowed": True,
    }


async def test_names_resolving_inward_are_refused_at_registration(make_flow, moto, gateway) -> None:
    flow = await make_flow()
    dns = Dns()
    flow.services.netguard.resolve = dns
    dns.answers.update(
        {
            "meta.example.org": ["169.254.169.254"],
            "inner.example.org": ["10.0.0.7"],
            "half.example.org": [PUBLIC, "192.168.1.1"],
            "v6.example.org": ["::ffff:169.254.169.254"],
        }
    )
    for i, host in enumerate(dns.answers):
        response = await flow.call(
            "POST",
            "/admin/buckets",
            json=bucket(f"refused-{i}", f"https://{host}"),
            headers=flow.admin,
        )
        assert response.status_code == 400, (host, response.text)
        assert response.json()["message"].startswith(f"endpoint: {host} resolves to")
    listing = await flow.call("GET", "/admin/buckets", headers=flow.admin)
    assert listing.json() == []


async def test_a_name_rebound_to_loopback_after_registration_reaches_nothing(
    make_flow, moto, gateway
) -> None:
    gateway_port = urlsplit(gateway.url).port
    with _CountingServer() as listener:
        # Loopback is allowed only for the test's own store, not for the listener's port.
        flow = await make_flow(endpoint_allowlist=f"127.0.0.1:{gateway_port}")
        dns = Dns()
        flow.services.netguard.resolve = dns
        boto(moto, "s3").create_bucket(Bucket="rebound")
        boto(moto, "s3").create_bucket(Bucket="by-name")
        put_static_secret(moto, "gen3/bucket-registry/minio-abc", STATIC_KEY_ID, STATIC_SECRET)

        # A name for the real store works, through the hook, on every new connection.
        dns.answers["store.example.org"] = ["127.0.0.1"]
        await flow.register(
            bucket("by-name", f"http://store.example.org:{gateway_port}"), None, ALL_OPS
        )
        flow.arborist.grant("submitter", "writer", "/programs/DEV/projects/ABC")
        user = flow.user("submitter")
        ok = await flow.call(
            "POST", "/multipart/init", json={"bucket": "by-name", "key": "a"}, headers=user
        )
        assert ok.status_code == 200, ok.text
        assert "store.example.org" in dns.calls

        dns.answers["rebind.example.org"] = [PUBLIC]
        await flow.register(
            bucket("rebound", f"http://rebind.example.org:{listener.port}"), None, ALL_OPS
        )
        dns.answers["rebind.example.org"] = ["127.0.0.1"]
        dns.calls.clear()

        init = await flow.call(
            "POST", "/multipart/init", json={"bucket": "rebound", "key": "a"}, headers=user
        )
        assert init.status_code == 503, init.text
        assert "rebind.example.org resolves to 127.0.0.1" in init.json()["message"]
        assert "ALLOWLIST" in init.json()["message"]

        report = await flow.call("POST", "/admin/buckets/rebound/validate", headers=flow.admin)
        checks = report.json()["checks"]
        assert checks["bucket_listable"]["status"] == "fail"
        assert "rebind.example.org resolves to 127.0.0.1" in checks["bucket_listable"]["reason"]
        assert checks["presign_test"]["status"] == "fail"
        assert "not sent" in checks["presign_test"]["reason"]
        assert dns.calls.count("rebind.example.org") >= 2
        assert listener.connections == 0
