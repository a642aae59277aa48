"""What a job submitted through the gateway may read: paths under the roots only, checked after
resolving links and `..`, regular files only, manifests within their size limit, image URLs off
by default and, when on, fetched from public addresses only within their size and time limits.
The local CLI (no confinement) keeps reading what its user can."""

from __future__ import annotations

import http.server
import io
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from vlarena.data.errors import ImageError, ManifestError
from vlarena.data.manifest import load_manifest
from vlarena.jobs import confinement as confinement_module
from vlarena.jobs.confinement import Confinement, ConfinementError, is_public


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLARENA_CACHE_DIR", str(tmp_path / "cache"))


def png_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    (path / "cat.png").write_bytes(png_bytes())
    return path


def manifest(directory: Path, *images: str) -> Path:
    lines = [
        json.dumps({"id": f"r{i}", "image": image, "caption": "a red square"})
        for i, image in enumerate(images)
    ]
    path = directory / "manifest.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    "outside",
    ["/etc/passwd", "/etc/vlarena-no-such-file", "/dev/zero", "{root}/../../../../etc/passwd"],
)
def test_paths_outside_the_roots_are_refused_alike_whether_they_exist_or_not(
    root: Path, outside: str
) -> None:
    policy = Confinement(roots=(root,))
    value = outside.format(root=root)
    with pytest.raises(ConfinementError) as caught:
        policy.path(value, "dataset.uri", "file-or-dir", must_exist=True)
    assert caught.value.field == "dataset.uri"
    assert caught.value.problem.startswith(f"{value} is outside the directories")
    assert str(root) in caught.value.problem


def test_links_are_resolved_before_the_check(root: Path) -> None:
    policy = Confinement(roots=(root,))
    (root / "passwd.jsonl").symlink_to("/etc/passwd")
    (root / "zero.jsonl").symlink_to("/dev/zero")
    for link in ("passwd.jsonl", "zero.jsonl"):
        with pytest.raises(ConfinementError, match="is outside"):
            policy.path(root / link, "dataset.uri", "file", must_exist=True)
    inside = root / "inside.png"
    inside.symlink_to(root / "cat.png")
    assert policy.path(inside, "image", "file", must_exist=True) == root / "cat.png"


def test_only_regular_files_are_read_and_manifests_within_their_limit(root: Path) -> None:
    policy = Confinement(roots=(root,), manifest_max_bytes=1024)
    os.mkfifo(root / "pipe.jsonl")
    with pytest.raises(ConfinementError, match="is not a regular file"):
        policy.read(root / "pipe.jsonl", "dataset.uri")
    with pytest.raises(ConfinementError, match="is not a regular file"):
        policy.read(root, "dataset.uri")
    (root / "big.jsonl").write_bytes(b"x" * 1025)
    with pytest.raises(ConfinementError, match="larger than 1,024 bytes"):
        policy.read(root / "big.jsonl", "dataset.uri")
    (root / "small.jsonl").write_bytes(b"x" * 1024)
    assert len(policy.read(root / "small.jsonl", "dataset.uri")) == 1024


def test_a_confined_manifest_never_reads_a_file_outside_the_roots(root: Path) -> None:
    policy = Confinement(roots=(root,))
    with pytest.raises(ConfinementError) as caught:
        load_manifest("/etc/passwd", confinement=policy)
    assert "invalid JSON" not in str(caught.value) and "is outside" in str(caught.value)
    (root / "dataset.json").symlink_to("/etc/hostname")
    with pytest.raises(ConfinementError, match=r"dataset\.json is outside"):
        load_manifest(manifest(root, "cat.png"), confinement=policy)


@pytest.mark.parametrize(
    "image",
    [
        "/etc/hostname",
        "/etc/vlarena-no-such-image.png",
        "../../../../../etc/hostname",
        "/dev/zero",
        "file:///etc/hostname",
    ],
)
def test_manifest_images_outside_the_roots_fail_on_their_line(root: Path, image: str) -> None:
    path = manifest(root, "cat.png", image)
    with pytest.raises(ManifestError) as caught:
        load_manifest(path, confinement=Confinement(roots=(root,)))
    assert (caught.value.line, caught.value.field) == (2, "image")
    assert "is outside the directories" in caught.value.problem
    assert "not found" not in caught.value.problem


def test_the_local_cli_reads_what_its_user_can(root: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "dog.png").write_bytes(png_bytes())
    dataset = load_manifest(manifest(root, "cat.png", str(elsewhere / "dog.png")))
    assert [r.image for r in dataset.records][1] == str(elsewhere / "dog.png")
    with pytest.raises(ManifestError, match="is outside"):
        load_manifest(
            manifest(root, "cat.png", str(elsewhere / "dog.png")),
            confinement=Confinement(roots=(root,)),
        )


def test_image_urls_are_off_by_default(root: Path) -> None:
    path = manifest(root, "cat.png", "https://images.example/cat.png")
    with pytest.raises(ManifestError, match="image URLs are off") as caught:
        load_manifest(path, confinement=Confinement(roots=(root,)))
    assert caught.value.line == 2


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # the cloud metadata endpoint
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fd00:ec2::254", False),
        ("::ffff:169.254.169.254", False),
        ("93.184.215.14", True),
        ("2606:4700:4700::1111", True),
    ],
)
def test_only_public_addresses_are_public(address: str, public: bool) -> None:
    assert is_public(address) is public


def fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if host in answers:
            return [
                (
                    socket.AF_INET6 if ":" in a else socket.AF_INET,
                    socket.SOCK_STREAM,
                    6,
                    "",
                    (a, port),
                )
                for a in answers[host]
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_urls_resolving_to_internal_addresses_are_refused_after_dns(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dns(
        monkeypatch,
        {"metadata.example": ["169.254.169.254"], "mixed.example": ["93.184.215.14", "10.0.0.7"]},
    )
    policy = Confinement(roots=(root,), allow_image_urls=True)
    for host, address in (("metadata.example", "169.254.169.254"), ("mixed.example", "10.0.0.7")):
        path = manifest(root, f"http://{host}/latest/meta-data/x.png")
        with pytest.raises(ImageError) as caught:
            load_manifest(path, confinement=policy)
        assert caught.value.line == 1
        assert f"resolves to {address}" in caught.value.problem


class ImageServer(http.server.BaseHTTPRequestHandler):
    """Serves /small.png, /big (over the limit, no Content-Length), /slow and /moved."""

    def do_GET(self) -> None:
        if self.path == "/small.png":
            body = png_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/big":
            self.send_response(200)
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"\0" * 1024)
        elif self.path == "/slow":
            self.send_response(200)
            self.end_headers()
            for _ in range(40):
                self.wfile.write(b"\0")
                self.wfile.flush()
                time.sleep(0.05)
        else:
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/")
            self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def image_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ImageServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_loopback_image_server_is_refused(root: Path, image_server: str) -> None:
    path = manifest(root, f"{image_server}/small.png")
    policy = Confinement(roots=(root,), allow_image_urls=True)
    with pytest.raises(ImageError, match=r"resolves to 127\.0\.0\.1, a private, loopback"):
        load_manifest(path, confinement=policy)


def test_allowed_urls_are_fetched_within_their_size_and_time_limits(
    root: Path, image_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test server is on loopback: here it counts as public, so the limits are what is tested.
    monkeypatch.setattr(confinement_module, "is_public", lambda address: True)
    policy = Confinement(
        roots=(root,),
        allow_image_urls=True,
        image_url_max_bytes=16 * 1024,
        image_url_timeout_seconds=1.0,
    )
    fetched = load_manifest(manifest(root, f"{image_server}/small.png"), confinement=policy)
    local = Path(fetched.records[0].image)
    assert local.is_file() and local.read_bytes() == png_bytes()
    assert fetched.load_images(4).shape == (1, 3, 4, 4)
    for path, problem in (
        ("/big", "larger than 16,384 bytes"),
        ("/slow", "took longer than 1 s"),
        ("/moved", "HTTP 302 (to http://169.254.169.254/"),
    ):
        started = time.monotonic()
        with pytest.raises(ImageError, match=re.escape(problem)):
            load_manifest(manifest(root, f"{image_server}{path}"), confinement=policy)
        assert time.monotonic() - started < 3
    assert not list((Path(os.environ["VLARENA_CACHE_DIR"]) / "images").glob("*tmp*"))
