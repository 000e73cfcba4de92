"""Development mode's embedded S3 store, and the demo bucket registered in it.

moto's server stands in for a local MinIO so that ``serve --dev`` shows a URL being signed and
bytes moving with nothing else installed. moto comes from the ``dev`` extra: only this module
imports it, and only ``serve --dev`` imports this module, so a production install never loads
it. The store keeps everything in memory: it starts empty each time and is gone when the
server stops.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from typing import Any

from app.config import Settings
from app.dev import DevMode
from app.errors import BucketNotFound
from app.registry.records import AuthMode, Provider
from app.registry.schemas import AllowedOps, BindingCreate, BucketCreate, BucketUpdate
from app.registry.service import Actor, RegistryService
from app.secrets.store import SecretStore

STORE_HOST = "127.0.0.1"
DEFAULT_STORE_PORT = 9100
DEMO_BUCKET = "dev-demo"
DEMO_PREFIX = "incoming/"
DEMO_PROJECT = "ABC"
DEMO_RESOURCE = "/programs/DEV/projects/ABC"
DEMO_OPS = AllowedOps(read=True, write=True, multipart=True)
DEMO_REGION = "us-east-1"
DEV_ACTOR = Actor("dev-mode")
# moto's own fake credentials (what its mocks put in the environment). Its server accepts any
# key, so these protect nothing; they still go through the file secrets backend like any
# static bucket's keys, and stay out of logs like them.
_STORE_KEYS = {"access_key_id": "FOOBARKEY", "secret_access_key": "FOOBARSECRET"}


class StorePortInUse(Exception):
    def __init__(self, port: int) -> None:
        super().__init__(
            f"the embedded S3 store cannot listen on {STORE_HOST}:{port}: the port is in use;"
            " pick another with --store-port (0 picks a free one)"
        )


class EmbeddedStore:
    """moto's S3-compatible server on loopback, in a background thread of this process."""

    def __init__(self, port: int = DEFAULT_STORE_PORT) -> None:
        self.port = port
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"http://{STORE_HOST}:{self.port}"

    def start(self) -> EmbeddedStore:
        # ThreadedMotoServer binds in its thread and waits forever if that fails; find out here.
        if self.port:
            _check_free(self.port)
        from moto.server import ThreadedMotoServer

        # werkzeug logs every request line, and a presigned URL's query carries the access key
        # id and the signature.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address=STORE_HOST, port=self.port, verbose=False)
        server.start()
        self._server = server
        self.port = server.get_host_and_port()[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def create_bucket(self, name: str) -> None:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=DEMO_REGION,
            aws_access_key_id=_STORE_KEYS["access_key_id"],
            aws_secret_access_key=_STORE_KEYS["secret_access_key"],
        )
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass


def _check_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the HTTP server will: a port left in TIME_WAIT by the last run is free to reuse.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((STORE_HOST, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StorePortInUse(port) from None
            raise


def start_demo(settings: Settings, mode: DevMode, port: int) -> EmbeddedStore:
    """Start the embedded store and register the demo bucket in it; the caller stops it."""
    store = EmbeddedStore(port).start()
    try:
        store.create_bucket(DEMO_BUCKET)
        asyncio.run(_register(settings, mode, store.url))
    except BaseException:
        store.stop()
        raise
    return store


async def _register(settings: Settings, mode: DevMode, endpoint: str) -> None:
    from app.container import Services
    from app.metrics import Metrics

    services = await Services.start(settings, metrics=Metrics(), listen=False)
    try:
        await register_demo(services.registry, services.secrets, mode, endpoint)
    finally:
        await services.aclose()


async def register_demo(
    registry: RegistryService, secrets: SecretStore, mode: DevMode, endpoint: str
) -> None:
    """Make sure the demo bucket, its prefix and its binding exist, through the registry's own
    validated, audited methods; a second start changes nothing but what must follow the store."""
    secret_ref = f"file://{mode.secrets_dir / (DEMO_BUCKET + '.json')}"
    await secrets.put(secret_ref, _STORE_KEYS)
    try:
        await registry.get_bucket(DEMO_BUCKET)
    except BucketNotFound:
        await registry.create_bucket(
            BucketCreate(
                name=DEMO_BUCKET,
                provider=Provider.MINIO,
                region=DEMO_REGION,
                endpoint=endpoint,
                auth_mode=AuthMode.STATIC,
                secret_ref=secret_ref,
                owner_project=DEMO_PROJECT,
                labels={"purpose": "dev-demo"},
                data_upload_allowed=True,
            ),
            DEV_ACTOR,
        )
    else:
        # Another --store-port, or the state directory moved: point the bucket at what runs
        # now. Unchanged fields write no audit row.
        await registry.update_bucket(
            DEMO_BUCKET,
            BucketUpdate(endpoint=endpoint, secret_ref=secret_ref),
            DEV_ACTOR,
            if_match=None,
        )
    if DEMO_PREFIX not in {row.prefix for row in await registry.list_prefixes(DEMO_BUCKET)}:
        await registry.add_prefix(DEMO_BUCKET, DEMO_PREFIX, DEV_ACTOR)
    bindings = await registry.list_bindings(DEMO_BUCKET)
    if not any(
        prefix == DEMO_PREFIX and binding.resource_path == DEMO_RESOURCE
        for binding, prefix in bindings
    ):
        await registry.add_binding(
            DEMO_BUCKET,
            BindingCreate(prefix=DEMO_PREFIX, resource_path=DEMO_RESOURCE, allowed_ops=DEMO_OPS),
            DEV_ACTOR,
        )
