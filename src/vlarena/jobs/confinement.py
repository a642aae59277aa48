"""What a job submitted through the gateway may read: regular files and directories under the
configured roots, and image URLs only when enabled and only from public addresses.

The gateway checks a spec's paths before it queues the job; the worker checks again when it
opens them (a manifest's images are only known then). The local CLI runs without a policy and
reads whatever its user can.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from vlarena.errors import UserInputError
from vlarena.jobs.spec import AnyJobSpec, EvaluateJobSpec
from vlarena.settings import Settings

PathKind = Literal["file", "dir", "file-or-dir"]
_KIND_WORDS = {"file": "a regular file", "dir": "a directory", "file-or-dir": "a file or directory"}


class ConfinementError(UserInputError):
    """Something a submitted job names lies outside what it may read; `field` says where."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


def _is_kind(mode: int, kind: PathKind) -> bool:
    if kind == "file":
        return stat.S_ISREG(mode)
    if kind == "dir":
        return stat.S_ISDIR(mode)
    return stat.S_ISREG(mode) or stat.S_ISDIR(mode)


def is_public(address: str) -> bool:
    """Whether an IP address is one on the public internet: not private, loopback, link-local
    (cloud metadata endpoints live there), multicast or reserved."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class Confinement:
    """The policy of submitted jobs. `roots` are the directories they may read under."""

    roots: tuple[Path, ...]
    allow_image_urls: bool = False
    image_url_max_bytes: int = 20 * 1024 * 1024
    image_url_timeout_seconds: float = 30.0
    manifest_max_bytes: int = 512 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> Confinement:
        return cls(
            roots=(settings.artifact_dir, *settings.data_roots),
            allow_image_urls=settings.allow_image_urls,
            image_url_max_bytes=settings.image_url_max_bytes,
            image_url_timeout_seconds=settings.image_url_timeout_seconds,
            manifest_max_bytes=settings.manifest_max_bytes,
        )

    def _outside(self, value: str | os.PathLike[str]) -> str:
        listed = ", ".join(str(root) for root in self.roots)
        return (
            f"{os.fspath(value)} is outside the directories submitted jobs may read ({listed}); "
            "put the data under one of them (VLARENA_DATA_ROOTS)"
        )

    def locate(self, value: str | os.PathLike[str]) -> Path | None:
        """`value` with its links and `..` resolved, where that lies under a root; else None
        (also for a relative path, or no path at all: a NUL byte, a link loop)."""
        if not PurePosixPath(os.fspath(value)).is_absolute():
            return None
        try:
            resolved = Path(value).resolve()
            roots = [root.resolve() for root in self.roots]
        except (OSError, ValueError, RuntimeError):
            return None
        return resolved if any(resolved.is_relative_to(root) for root in roots) else None

    def path(
        self, value: str | os.PathLike[str], field: str, kind: PathKind, *, must_exist: bool
    ) -> Path:
        """The resolved path `value` names, checked to lie under a root and to be of `kind`
        where it exists; raises ConfinementError naming `field` otherwise.

        Whether a path outside the roots exists is never looked at, so the answer tells
        nothing about the rest of the machine.
        """
        located = self.locate(value)
        if located is None:
            raise ConfinementError(field, self._outside(value))
        try:
            mode = located.stat().st_mode
        except FileNotFoundError:
            if must_exist:
                raise ConfinementError(field, f"{os.fspath(value)} does not exist") from None
            return located
        except OSError as exc:
            raise ConfinementError(
                field, f"cannot read {os.fspath(value)}: {exc.strerror}"
            ) from exc
        if not _is_kind(mode, kind):
            raise ConfinementError(field, f"{os.fspath(value)} is not {_KIND_WORDS[kind]}")
        return located

    def read(self, value: str | os.PathLike[str], field: str) -> bytes:
        """The bytes of a regular file under a root, at most `manifest_max_bytes` of them."""
        path = self.path(value, field, "file", must_exist=True)
        limit = self.manifest_max_bytes
        try:
            # O_NONBLOCK: a FIFO swapped in since the check opens at once and fails fstat below.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            raise ConfinementError(
                field, f"cannot read {os.fspath(value)}: {exc.strerror}"
            ) from exc
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ConfinementError(field, f"{os.fspath(value)} is not a regular file")
            data = file.read(limit + 1)
        if len(data) > limit:
            raise ConfinementError(
                field,
                f"{os.fspath(value)} is larger than {limit:,} bytes (VLARENA_MANIFEST_MAX_BYTES)",
            )
        return data

    def image_url(self, url: str, field: str = "image") -> None:
        """Refuses an image URL while URLs are off."""
        if not self.allow_image_urls:
            raise ConfinementError(
                field,
                f"{url}: image URLs are off for submitted jobs; put the images under a data "
                "root and name them by path (or ask an admin for VLARENA_ALLOW_IMAGE_URLS)",
            )

    def public_address(self, host: str, port: int, field: str = "image") -> str:
        """The address to connect to for `host`, resolved once here so that the check and the
        connection see the same one; refuses a host with any non-public address."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise ConfinementError(field, f"cannot resolve {host}: {exc}") from exc
        addresses = [str(info[4][0]) for info in infos]
        for address in addresses:
            if not is_public(address):
                raise ConfinementError(
                    field,
                    f"{host} resolves to {address}, a private, loopback, link-local or "
                    "reserved address; submitted jobs fetch images from public addresses only",
                )
        if not addresses:
            raise ConfinementError(field, f"{host} has no address")
        return addresses[0]


def spec_problems(spec: AnyJobSpec, confinement: Confinement) -> list[tuple[str, str]]:
    """(field, problem) for each path of a spec that a submitted job may not read: what can be
    told before the job runs (a manifest's images are checked when the worker reads it)."""
    checks: list[tuple[str, str | None, PathKind]] = [
        ("dataset.uri", spec.dataset.uri if spec.dataset else None, "file-or-dir"),
    ]
    if isinstance(spec, EvaluateJobSpec):
        checks.append(("source.runDir", spec.source.run_dir, "dir"))
    problems = []
    for field, value, kind in checks:
        if value is None:
            continue
        try:
            confinement.path(value, field, kind, must_exist=False)
        except ConfinementError as exc:
            problems.append((field, exc.problem))
    return problems
