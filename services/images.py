"""Builds vlarena's container images with buildah: the stand-in bases, the images, an SBOM and a size check each.

`make images` runs `build`: where Docker Hub and NVIDIA's registry cannot be reached it first
makes stand-ins for the upstream bases (a Debian bookworm base from the Debian archive, Python,
Node and a Triton server from the nvidia-pytriton wheel), then builds the gateway, worker and
Triton images from services/*/Dockerfile with those passed as build arguments, tagged as the chart
and the compose file name them and labelled with the git commit. pip and npm inside the builds
reach packages through this machine's own configuration, handed in as a build context that only
the download steps mount. `make pin-bases` runs `pin-bases` on a host that can reach the
registries: each upstream base in the Dockerfiles gains its digest.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import yaml

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ROOT / "services"
STANDINS = SERVICES / "standins"
CHART = ROOT / "charts" / "vlarena"
COMPOSE_FILE = ROOT / "docker-compose.yml"
OUT = ROOT / "build" / "images"
SBOM_DIR = OUT / "sbom"
REPORT = OUT / "report.json"

REVISION_LABEL = "org.opencontainers.image.revision"
WORKTREE_LABEL = "dev.vlarena.worktree"
RECIPE_LABEL = "dev.vlarena.recipe"
BUILD_CONFIG = "/run/build-config"
MB = 1_000_000


# Dockerfiles as data.


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line.removesuffix("\\").strip() + " "
        if not line.endswith("\\"):
            keyword, _, rest = pending.strip().partition(" ")
            out.append((keyword.upper(), rest.strip()))
            pending = ""
    return out


def arg_defaults(dockerfile: Path) -> dict[str, str]:
    """{ARG name: default} of every ARG that has one."""
    defaults = {}
    for keyword, rest in instructions(dockerfile):
        if keyword == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            defaults[name] = default
    return defaults


def base_image_args(dockerfile: Path) -> dict[str, str]:
    """{ARG name: default} of the ARGs that name a base image (used in a FROM line)."""
    used = {
        m.group(1)
        for keyword, rest in instructions(dockerfile)
        if keyword == "FROM"
        for m in re.finditer(r"\$\{(\w+)\}", rest)
    }
    return {name: value for name, value in arg_defaults(dockerfile).items() if name in used}


def base_images(dockerfile: Path) -> list[str]:
    """The images the Dockerfile's stages start from (not its own stages, not `scratch`)."""
    steps = instructions(dockerfile)
    args = arg_defaults(dockerfile)
    stages = {rest.split()[-1] for k, rest in steps if k == "FROM" and " AS " in rest.upper()}
    images = []
    for keyword, rest in steps:
        if keyword == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.split()[0])
            if image not in stages and image != "scratch":
                images.append(image)
    return images


def exec_form(dockerfile: Path, keyword: str) -> list[str] | None:
    found = [rest for k, rest in instructions(dockerfile) if k == keyword]
    return json.loads(found[-1]) if found else None


# What gets built.


@dataclass(frozen=True)
class StandIn:
    """A local image standing in for an upstream one that cannot be pulled here."""

    name: str
    tag: str
    # The Dockerfile ARG it is passed as; None for images the tests and compose run directly.
    replaces: str | None = None
    needs: tuple[str, ...] = ("debian",)

    @property
    def dockerfile(self) -> Path:
        return STANDINS / self.name / "Dockerfile"


@dataclass(frozen=True)
class Image:
    """One of vlarena's images: its Dockerfile, the stand-ins it builds on here, its size budget,
    and the build arguments that name a package index (given this machine's here)."""

    component: str
    budget_mb: int
    standins: tuple[str, ...]
    index_args: tuple[str, ...] = ()

    @property
    def dockerfile(self) -> Path:
        return SERVICES / self.component / "Dockerfile"


# mmdebstrap makes the Debian base from the archive. Documentation and translations are left out,
# and apt keeps no package cache, as in Debian's official images.
DEBIAN_SUITE = "bookworm"
DEBIAN_SOURCES = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
MMDEBSTRAP_OPTIONS = (
    "--variant=minbase",
    "--include=ca-certificates",
    # Merges /usr without the usrmerge package, which would pull perl in.
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    '--aptopt=APT::Install-Recommends "false"',
    '--aptopt=Acquire::Languages "none"',
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    # Written after the bootstrap, which needs its downloaded packages until the end; the caches
    # it made go too (`apt-get clean` no longer finds them once this configuration is in place).
    "--customize-hook=printf '%s\\n' "
    "'DPkg::Post-Invoke { \"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb || true\"; };' "
    "'Dir::Cache::pkgcache \"\";' 'Dir::Cache::srcpkgcache \"\";' "
    '> "$1/etc/apt/apt.conf.d/docker-clean" && rm -f "$1"/var/cache/apt/*.bin',
)

STANDIN_IMAGES = {
    s.name: s
    for s in (
        StandIn("debian", "localhost/vlarena-standins/debian:bookworm", "DEBIAN_IMAGE", needs=()),
        StandIn("python", "localhost/vlarena-standins/python:3.11-bookworm", "PYTHON_IMAGE"),
        StandIn("node", "localhost/vlarena-standins/node:bookworm", "NODE_IMAGE"),
        StandIn(
            "tritonserver", "localhost/vlarena-standins/tritonserver:pytriton-0.7.0", "TRITON_IMAGE"
        ),
        StandIn("redis", "localhost/vlarena-standins/redis:7.0"),
        StandIn("prometheus", "localhost/vlarena-standins/prometheus:2.42"),
    )
}
# Stand-ins that no Dockerfile builds on but the image tests and compose run beside the images.
RUNTIME_STANDINS = ("redis", "prometheus")
IMAGES = {
    i.component: i
    for i in (
        Image("gateway", budget_mb=400, standins=("python",)),
        Image(
            "worker", budget_mb=2600, standins=("python", "node"), index_args=("TORCH_INDEX_URL",)
        ),
        Image("triton", budget_mb=1400, standins=("tritonserver",)),
    )
}


def chart_image(component: str) -> str:
    """The image reference the chart renders for `component` with its default values."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    image = values[component]["image"]
    registry = values["global"].get("imageRegistry") or image.get("registry", "")
    repository = f"{registry}/{image['repository']}" if registry else image["repository"]
    return f"{repository}:{image.get('tag') or chart['appVersion']}"


def compose_image(component: str) -> str | None:
    """The image the compose file builds for `component` (podman spells it with localhost/)."""
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    name = services.get(component, {}).get("image")
    if name is None:
        return None
    return name if "/" in name.split(":")[0] else f"localhost/{name}"


def image_tags(component: str) -> list[str]:
    tags = [chart_image(component)]
    compose = compose_image(component)
    if compose:
        tags.append(compose)
    return tags


# The machine's package configuration, handed to builds.


def build_inputs() -> list[str]:
    """What the images are built from: the paths .dockerignore lets into the build context."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line[1:].rstrip("/") for line in lines if line.startswith("!")]


def git_revision() -> tuple[str, bool]:
    """HEAD's commit, and whether the build inputs differ from it (untracked files included)."""
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    status = subprocess.run(
        ["git", "status", "--porcelain", "--", *build_inputs()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return head, bool(status.strip())


def pip_settings() -> dict[str, str]:
    """pip's effective settings on this machine (`pip config list`), as install sees them:
    [global], then [install], then PIP_* variables."""
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    scoped: dict[str, dict[str, str]] = {"global": {}, "install": {}, ":env:": {}}
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        scope, _, name = key.partition(".")
        if scope in scoped:
            scoped[scope][name] = ast.literal_eval(value)
    return {**scoped["global"], **scoped["install"], **scoped[":env:"]}


def npm_settings() -> dict[str, str]:
    """npm's registry and CA file on this machine; empty where npm is not installed."""
    npm = shutil.which("npm")
    if npm is None:
        return {}
    settings = {}
    for key in ("registry", "cafile"):
        value = subprocess.run(
            [npm, "config", "get", key], capture_output=True, text=True, check=False
        ).stdout.strip()
        if value and value not in ("null", "undefined"):
            settings[key] = value
    return settings


# pip settings naming PEP 503 indexes (the others name files or find-links directories).
INDEX_SETTINGS = ("index-url", "extra-index-url")


class _LocalFilesHandler(http.server.SimpleHTTPRequestHandler):
    """Serves `/<n>/<path>` from the n-th shared directory, with directory listings (which pip
    reads as find-links pages)."""

    roots: ClassVar[list[Path]] = []

    def translate_path(self, path: str) -> str:
        index, _, rest = urllib.parse.urlsplit(path).path.lstrip("/").partition("/")
        if not index.isdigit() or int(index) >= len(self.roots):
            return "/nonexistent"
        self.directory = str(self.roots[int(index)])
        return super().translate_path("/" + rest)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def build_config(directory: Path) -> Iterator[Path]:
    """Writes `directory`: a pip.conf and an npmrc for builds, with the files they name copied in.

    Builds see the directory at /run/build-config. Local package directories (find-links, file://
    indexes) are too big to copy: they are served over HTTP on 127.0.0.1 while the context is
    open (build steps share the host's network), each with its parent, because a file:// index's
    pages link to files beside it (../../files/...).
    """
    shutil.rmtree(directory, ignore_errors=True)
    (directory / "files").mkdir(parents=True)
    served: list[Path] = []
    copies: dict[Path, str] = {}
    handler = type("Handler", (_LocalFilesHandler,), {"roots": served})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    base_url = f"http://127.0.0.1:{server.server_address[1]}"

    def translate(token: str, index: bool = False) -> str:
        path = Path(urllib.parse.urlsplit(token).path) if token.startswith("file:") else Path(token)
        if not path.is_absolute() or not path.exists():
            return token
        if path.is_file():
            if path not in copies:
                name = f"{len(copies)}-{path.name}"
                shutil.copyfile(path, directory / "files" / name)
                copies[path] = f"{BUILD_CONFIG}/files/{name}"
            return copies[path]
        served.append(path.parent if index else path)
        return f"{base_url}/{len(served) - 1}/{path.name + '/' if index else ''}"

    pip = {
        key: " ".join(translate(t, key in INDEX_SETTINGS) for t in value.split())
        for key, value in pip_settings().items()
    }
    if served:
        pip["trusted-host"] = " ".join(filter(None, [pip.get("trusted-host"), "127.0.0.1"]))
    (directory / "pip.conf").write_text(
        "[global]\n" + "".join(f"{key} = {value}\n" for key, value in sorted(pip.items()))
    )
    npm = {key: translate(value) for key, value in npm_settings().items()}
    (directory / "npmrc").write_text("".join(f"{key}={value}\n" for key, value in npm.items()))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield directory
    finally:
        server.shutdown()
        server.server_close()


def index_url() -> str:
    """The package index pip uses here, for build steps that name an index of their own."""
    return pip_settings().get("index-url", "https://pypi.org/simple")


# buildah and podman.


def run(argv: list[str], capture: bool = False) -> str:
    """Runs a command that must succeed; its output when `capture`."""
    return subprocess.run(argv, text=True, check=True, capture_output=capture).stdout or ""


def inspect(tag: str) -> dict[str, Any] | None:
    """podman's view of a local image; None when there is none."""
    result = subprocess.run(
        ["podman", "image", "inspect", tag], capture_output=True, text=True, check=False
    )
    return json.loads(result.stdout)[0] if result.returncode == 0 else None


def labels(tag: str) -> dict[str, str]:
    found = inspect(tag)
    return (found or {}).get("Labels") or {}


def write_containers_conf(path: Path) -> Path:
    """A containers.conf (for CONTAINERS_CONF) under which `podman run` starts containers here.

    podman's defaults raise the open-files and processes limits above what a sandboxed machine
    lets a process set (`setrlimit ... Operation not permitted`), and crun refuses cgroup v1
    hybrid hierarchies: containers get this machine's own hard limits, the processes limit no
    higher than kernel.pid_max (the highest such a sandbox accepts), and runc.
    """
    import resource

    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    nproc = pid_max if nproc == resource.RLIM_INFINITY else min(nproc, pid_max)
    if nofile == resource.RLIM_INFINITY:
        nofile = 1 << 20
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
    )
    return path


def recipe_digest(standin: StandIn) -> str:
    """What a stand-in is made from: its directory's files (or mmdebstrap's options) and its
    bases' recipes."""
    digest = hashlib.sha256()
    if standin.name == "debian":
        digest.update(json.dumps([DEBIAN_SUITE, DEBIAN_SOURCES, MMDEBSTRAP_OPTIONS]).encode())
    else:
        for path in sorted(standin.dockerfile.parent.rglob("*")):
            if path.is_file():
                digest.update(path.name.encode() + path.read_bytes())
    for need in standin.needs:
        digest.update(recipe_digest(STANDIN_IMAGES[need]).encode())
    return digest.hexdigest()[:16]


def make_debian(standin: StandIn, digest: str) -> None:
    with tempfile.TemporaryDirectory(prefix="vlarena-debian-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        run(
            [
                "mmdebstrap",
                "--quiet",
                *MMDEBSTRAP_OPTIONS,
                DEBIAN_SUITE,
                str(rootfs),
                *DEBIAN_SOURCES,
            ]
        )
        run(
            [
                "podman", "import", "--quiet",
                "--change", 'CMD ["bash"]',
                "--change", f"LABEL {RECIPE_LABEL}={digest}",
                str(rootfs), standin.tag,
            ]
        )  # fmt: skip


def bud(
    dockerfile: Path,
    context: Path,
    tags: list[str],
    config: Path,
    build_args: dict[str, str],
    image_labels: dict[str, str],
) -> None:
    argv = [
        "buildah", "bud", "--isolation", "chroot", "--layers", "--pull=false",
        "--build-context", f"build-config={config}",
        "-f", str(dockerfile),
    ]  # fmt: skip
    for name, value in build_args.items():
        argv += ["--build-arg", f"{name}={value}"]
    for name, value in image_labels.items():
        argv += ["--label", f"{name}={value}"]
    for tag in tags:
        argv += ["--tag", tag]
    run([*argv, str(context)])


def ensure_standin(name: str, config: Path) -> float:
    """Builds the stand-in (and the ones it needs) unless an image from the same recipe is
    there; the seconds it took."""
    standin = STANDIN_IMAGES[name]
    took = sum(ensure_standin(need, config) for need in standin.needs)
    digest = recipe_digest(standin)
    if labels(standin.tag).get(RECIPE_LABEL) == digest:
        return took
    print(f"== stand-in {standin.tag}", flush=True)
    start = time.monotonic()
    if name == "debian":
        make_debian(standin, digest)
    else:
        args = {STANDIN_IMAGES[n].replaces: STANDIN_IMAGES[n].tag for n in standin.needs}
        bud(standin.dockerfile, standin.dockerfile.parent, [standin.tag], config,
            {k: v for k, v in args.items() if k}, {RECIPE_LABEL: digest})  # fmt: skip
    return took + time.monotonic() - start


# SBOM.


def _dpkg_packages(rootfs: Path) -> list[dict[str, str]]:
    status = rootfs / "var" / "lib" / "dpkg" / "status"
    packages = []
    for paragraph in status.read_text().split("\n\n"):
        fields = dict(re.findall(r"^([\w-]+): (.*)$", paragraph, flags=re.M))
        if fields.get("Status", "").endswith(" installed"):
            packages.append(fields)
    return packages


def _python_distributions(rootfs: Path) -> dict[Path, list[metadata.Distribution]]:
    """{directory inside the image: distributions} for every directory holding *.dist-info."""
    found: dict[Path, list[metadata.Distribution]] = {}
    for top in ("opt", "usr/lib", "usr/local/lib"):
        for dist_info in sorted((rootfs / top).rglob("*.dist-info")):
            site = dist_info.parent
            if site not in found:
                found[site] = list(metadata.distributions(path=[str(site)]))
    return {Path("/") / site.relative_to(rootfs): dists for site, dists in found.items()}


def _npm_packages(rootfs: Path) -> list[dict[str, str]]:
    """Top-level npm packages copied into /opt (the emoji dataset), not their dependencies."""
    packages = []
    for manifest in sorted((rootfs / "opt").glob("*/*/package.json")):
        data = json.loads(manifest.read_text())
        if "name" in data and "version" in data:
            packages.append({"name": data["name"], "version": data["version"]})
    return packages


def write_sbom(tag: str, component: str, out: Path) -> dict[str, int]:
    """A CycloneDX 1.6 JSON SBOM of the image: its Debian packages, the Python distributions in
    every environment it holds and the npm packages it copies in. Returns counts per ecosystem."""
    from cyclonedx.model import Property
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    from packageurl import PackageURL

    info = inspect(tag)
    assert info is not None, tag
    name, _, version = tag.rpartition(":")
    bom = Bom()
    bom.metadata.component = Component(
        name=name,
        version=version,
        type=ComponentType.CONTAINER,
        bom_ref=tag,
        properties=[
            Property(name="vlarena:component", value=component),
            Property(name="vlarena:image-id", value=info["Id"]),
            Property(
                name="vlarena:revision", value=(info.get("Labels") or {}).get(REVISION_LABEL, "")
            ),
        ],
    )
    counts = {"deb": 0, "pypi": 0, "npm": 0}
    seen: set[str] = set()

    def add(purl: PackageURL, kind: str, location: str | None = None) -> None:
        ref = purl.to_string()
        if ref in seen:
            return
        seen.add(ref)
        counts[kind] += 1
        props = [Property(name="vlarena:location", value=location)] if location else []
        bom.components.add(
            Component(
                name=purl.name,
                version=purl.version,
                type=ComponentType.LIBRARY,
                purl=purl,
                bom_ref=ref,
                properties=props,
            )
        )

    mount = run(["podman", "image", "mount", tag], capture=True).strip()
    try:
        rootfs = Path(mount)
        release = dict(
            re.findall(r'^(\w+)="?([^"\n]*)"?$', (rootfs / "etc/os-release").read_text(), re.M)
        )
        codename = f"{release.get('ID', 'debian')}-{release.get('VERSION_ID', '')}"
        for pkg in _dpkg_packages(rootfs):
            qualifiers = {"arch": pkg.get("Architecture", ""), "distro": codename}
            add(PackageURL("deb", "debian", pkg["Package"], pkg["Version"], qualifiers), "deb")
        for site, dists in _python_distributions(rootfs).items():
            for dist in dists:
                dist_name = dist.metadata["Name"]
                if dist_name:
                    purl = PackageURL("pypi", None, dist_name.lower(), dist.version)
                    add(purl, "pypi", str(site))
        for pkg in _npm_packages(rootfs):
            add(PackageURL("npm", None, pkg["name"], pkg["version"]), "npm")
    finally:
        subprocess.run(["podman", "image", "unmount", tag], capture_output=True, check=False)
    text = JsonV1Dot6(bom).output_as_string(indent=1)
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if errors:
        raise RuntimeError(f"{tag}: the SBOM does not validate: {errors}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    return counts


# Commands.


def build_image(
    image: Image, config: Path, upstream_bases: bool, labels_: dict[str, str]
) -> dict[str, Any]:
    """Builds one image (on the stand-ins unless `upstream_bases`) and writes its SBOM; what
    the report records of it."""
    build_args: dict[str, str] = {}
    standin_seconds = 0.0
    if not upstream_bases:
        for name in image.standins:
            standin_seconds += ensure_standin(name, config)
            standin = STANDIN_IMAGES[name]
            assert standin.replaces, name
            build_args[standin.replaces] = standin.tag
        build_args |= {arg: index_url() for arg in image.index_args}
    tags = image_tags(image.component)
    print(f"== {image.component}: {', '.join(tags)}", flush=True)
    start = time.monotonic()
    bases = ",".join(f"{k}={v}" for k, v in sorted(build_args.items()) if k.endswith("_IMAGE"))
    bud(image.dockerfile, ROOT, tags, config, build_args,
        {**labels_, "org.opencontainers.image.title": f"vlarena-{image.component}",
         "dev.vlarena.bases": bases or "upstream"})  # fmt: skip
    seconds = time.monotonic() - start
    sbom = SBOM_DIR / f"{image.component}.cdx.json"
    counts = write_sbom(tags[0], image.component, sbom)
    return {
        "tags": tags,
        "revision": labels_[REVISION_LABEL],
        "buildSeconds": round(seconds, 1),
        "standinSeconds": round(standin_seconds, 1),
        "sizeMB": round((inspect(tags[0]) or {}).get("Size", 0) / MB),
        "budgetMB": image.budget_mb,
        "sbom": str(sbom.relative_to(ROOT)),
        "sbomComponents": counts,
    }


def build(components: list[str], rebuild_standins: bool, upstream_bases: bool) -> int:
    """Builds `components`, records them in build/images/report.json and prints build times and
    sizes against the budgets; 1 when an image is over its budget."""
    revision, modified = git_revision()
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    image_labels = {
        REVISION_LABEL: revision,
        WORKTREE_LABEL: "modified" if modified else "clean",
        "org.opencontainers.image.version": chart["appVersion"],
        "org.opencontainers.image.source": chart["home"],
    }
    report: dict[str, dict[str, Any]] = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    if rebuild_standins:
        subprocess.run(
            ["podman", "rmi", "--force", *(s.tag for s in STANDIN_IMAGES.values())],
            capture_output=True,
            check=False,
        )
    with build_config(OUT / "build-config") as config:
        for component in components:
            report[component] = build_image(IMAGES[component], config, upstream_bases, image_labels)
            REPORT.write_text(json.dumps(report, indent=1) + "\n")
        if not upstream_bases:
            for name in RUNTIME_STANDINS:
                ensure_standin(name, config)
    over = [c for c in components if report[c]["sizeMB"] > report[c]["budgetMB"]]
    print(f"\n{'image':8} {'build':>8} {'size':>9} {'budget':>9}  SBOM (deb/pypi/npm)")
    for component in components:
        r = report[component]
        c = r["sbomComponents"]
        mark = "OVER BUDGET" if component in over else "ok"
        print(
            f"{component:8} {r['buildSeconds']:7.0f}s {r['sizeMB']:6d} MB {r['budgetMB']:6d} MB"
            f"  {c['deb']}/{c['pypi']}/{c['npm']}  {mark}"
        )
    if over:
        print(f"over their size budget: {', '.join(over)}", file=sys.stderr)
        return 1
    return 0


def pin_bases(dockerfiles: list[Path]) -> int:
    """Rewrites each upstream base ARG default `name:tag` as `name:tag@sha256:…`: the digest of
    the tag's manifest (list) now, so a build on any platform resolves the same bytes."""
    failed = []
    for dockerfile in dockerfiles:
        text = dockerfile.read_text()
        for arg, ref in base_image_args(dockerfile).items():
            if ref.startswith("localhost/"):
                continue
            tagged = ref.split("@")[0]
            result = subprocess.run(
                ["skopeo", "inspect", "--raw", f"docker://{tagged}"],
                capture_output=True,
                check=False,
            )
            if result.returncode != 0:
                failed.append(f"{tagged}: {result.stderr.decode(errors='replace').strip()}")
                continue
            pinned = f"{tagged}@sha256:{hashlib.sha256(result.stdout).hexdigest()}"
            text = text.replace(f"ARG {arg}={ref}\n", f"ARG {arg}={pinned}\n")
            print(f"{dockerfile.relative_to(ROOT)}: {arg}={pinned}")
        dockerfile.write_text(text)
    if failed:
        print(
            "could not resolve (pin-bases needs a host that reaches the registries):",
            file=sys.stderr,
        )
        for line in failed:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="services/images.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the images (and the stand-ins they need)")
    b.add_argument("components", nargs="*", help=f"some of {', '.join(IMAGES)} (default: all)")
    b.add_argument(
        "--rebuild-standins",
        action="store_true",
        help="remake the stand-ins too (for the Debian archive's latest packages)",
    )
    b.add_argument(
        "--upstream-bases",
        action="store_true",
        help="build on the Dockerfiles' own bases (a host that can pull them)",
    )
    s = sub.add_parser("standin", help="build one stand-in image (e.g. redis for compose)")
    s.add_argument("name", choices=list(STANDIN_IMAGES))
    sub.add_parser("pin-bases", help="pin the Dockerfiles' upstream bases to digests")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    OUT.mkdir(parents=True, exist_ok=True)
    if args.command == "build":
        unknown = set(args.components) - set(IMAGES)
        if unknown:
            parser.error(f"no such image: {', '.join(sorted(unknown))}")
        return build(args.components or list(IMAGES), args.rebuild_standins, args.upstream_bases)
    if args.command == "standin":
        with build_config(OUT / "build-config") as config:
            ensure_standin(args.name, config)
        return 0
    return pin_bases(sorted(SERVICES.glob("*/Dockerfile")))


if __name__ == "__main__":
    raise SystemExit(main())
