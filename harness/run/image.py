"""The runtime image (the project's ``Dockerfile``), built through the Docker API, cached by content.

``durabench:<hash>`` where the hash covers the Dockerfile, the dependency list of pyproject.toml,
every source file of the project and the base image's id: an image of the same content is never
built twice, and any edit gives a new tag. ``durabench:latest`` follows the image last built or
found by ``ensure`` (the compose files in compose/ default to it): on a daemon shared by several
checkouts, the one that ran last owns it.

No image registry is needed. The base is ``--base IMAGE`` if given (e.g. ``debian:bookworm-slim``
where a registry is reachable), else ``durabench-base:bookworm-<hash>``, made once with
``debootstrap --variant=minbase bookworm`` from the Debian mirror apt uses here and ``docker import``.
The dependencies come from a wheelhouse that the host's pip fills (``pip wheel``, with the host's
own TLS settings and pip cache); the build itself runs with no network, so nothing of the host's
trust store or credentials is needed inside it, and nothing reaches the image or its history.
The engines shipped as plugins (``plugins/*``: durabench-absurd) are built into wheels next to the
project's, and their dependencies join the wheelhouse.
The servers durabench gets outside PyPI come from the host's caches too (``cache/`` of the context,
``/opt/durabench/cache`` in the image, its ``$DURABENCH_CACHE``): the Temporal server on PostgreSQL
(harness.temporalbuild; built first, with progress, when Go is here and it is not; refused naming
``make temporal-server`` without Go), the Restate server (npm, harness.run.services.restate_binary)
and Kafka's jars (Maven Central, harness.run.kafka); the base holds Java 17 for Kafka.
The Go workers (every ``engines/*/go.mod``: ``dbos_go``, ``temporal_go``) are built on the host by
``harness.gobuild`` (its cache, ``~/.cache/durabench/go``) and copied into the context as
``go/<binary>``; the image holds them at ``/opt/durabench/go/<binary>`` (``GO_DIR``). They link only
glibc, and the image is Debian bookworm like the hosts this project supports.
Caches live in ``$DURABENCH_CACHE`` (default ``~/.cache/durabench``): ``wheelhouse-<hash>/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
TREE_LABEL = "durabench.tree"  # the checkout an image was built from (see _remove_older)
REPOSITORY = "durabench"
BASE_REPOSITORY = "durabench-base"
SUITE = "bookworm"
# what the Dockerfile would otherwise apt-get (Java 17 for Kafka)
BASE_PACKAGES = ("python3", "python3-venv", "passwd", "openjdk-17-jre-headless")
SOURCE_DIRS = ("harness", "engines", "plugins")
PLUGINS = ("plugins/durabench-absurd",)  # engines as their own distributions, installed in the image too
IMAGE_CACHE = "/opt/durabench/cache"  # the image's $DURABENCH_CACHE (the Dockerfile's COPY cache/)
SOURCE_FILES = ("pyproject.toml", "README.md", "Dockerfile")
# not sources: what Python, pip and setuptools write into the tree. ``pip wheel`` of a plugin leaves its
# build/ and egg-info beside its sources (see project_wheel): they must not change the content hash,
# or the tree would hash differently after its first build and the next start would build again
_SKIP_DIRS = re.compile(r"^(__pycache__|build|dist|\..*_cache|.*\.egg-info)$")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
IMAGE_PYTHON = "3.11.2"  # Debian bookworm's python3, the image's interpreter
IMAGE_SITE_PACKAGES = f"/opt/durabench/lib/python{'.'.join(IMAGE_PYTHON.split('.')[:2])}/site-packages"
GO_DIR = "/opt/durabench/go"  # the Go workers in the image (the Dockerfile's COPY go/)
GO_LIST = "BINARIES"  # go/BINARIES: the names of the Go binaries the image holds, one a line

Say = Callable[[str], None]


def cache_dir() -> Path:
    base = os.environ.get("DURABENCH_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "durabench")


def requirements() -> list[str]:
    """The runtime dependencies of the project and of its plugins (``project.dependencies`` of each
    pyproject.toml; a plugin's ``durabench`` is the project itself)."""
    out = list(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    for plugin in PLUGINS:
        deps = tomllib.loads((ROOT / plugin / "pyproject.toml").read_text())["project"]["dependencies"]
        out += [dep for dep in deps if dep.split("[")[0].split("=")[0].strip() != "durabench" and dep not in out]
    return out


def _source_files() -> list[Path]:
    files = [ROOT / name for name in SOURCE_FILES]
    for top in SOURCE_DIRS:
        files += sorted(p for p in (ROOT / top).rglob("*") if p.is_file() and p.suffix != ".pyc"
                        and not any(_SKIP_DIRS.match(part) for part in p.relative_to(ROOT).parts[:-1]))
    return files


def _digest(parts: list[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:12]


def go_binaries(say: Say | None = None) -> dict[str, Path]:
    """The Go workers of this source tree, built (or found) in harness.gobuild's cache, by binary name.
    A binary that cannot be built (no Go toolchain) is left out with a line saying so: its engine is
    then refused under containers."""
    from harness import gobuild
    from harness.errors import EngineUnavailable

    out: dict[str, Path] = {}
    for src in gobuild.go_sources():
        try:
            out[src.name] = gobuild.build(src, src.name)
        except EngineUnavailable as exc:
            if say is not None:
                say(f"image: without the Go worker {src.name}: {exc}")
    return out


def content_hash(base_id: str, go: dict[str, Path] | None = None, servers: dict[str, Path] | None = None) -> str:
    """Hash of everything that goes into the image: base id, Dockerfile, dependencies, sources, the Go
    binaries (their cache names carry the hash of their sources and Go toolchain) and the server files
    (their paths carry their versions; with their sizes)."""
    parts = [base_id.encode(), json.dumps(requirements()).encode()]
    parts += [path.name.encode() for _, path in sorted((go or {}).items())]
    parts += [f"{arc}:{path.stat().st_size}".encode() for arc, path in sorted((servers or {}).items())]
    for path in _source_files():
        parts += [str(path.relative_to(ROOT)).encode(), path.read_bytes()]
    return _digest(parts)


def server_files(say: Say | None = None) -> dict[str, Path]:
    """The server files the image holds under its cache, by path there (host path as value): the Temporal
    server and SQL tool (built first if Go is here), the Restate server binary (installed from npm once),
    Kafka's jars (fetched from Maven Central once). Without one of them the image is not built: a
    UserError says what to run."""
    from harness import temporalbuild
    from harness.errors import DurabenchError
    from harness.run import kafka, services

    out: dict[str, Path] = {}
    bins = temporalbuild.binaries()
    if bins is None:
        if temporalbuild.go_version() is None:
            raise UserError(f"the image holds the Temporal server {temporalbuild.SERVER_VERSION}, which is not built "
                            "here and there is no Go toolchain to build it: install Go, then `make temporal-server`")
        bins = temporalbuild.build(progress=lambda line: say(f"image: {line}") if say else None)
    for name, path in bins.items():
        out[f"temporal-server/{path.parent.name}/{name}"] = path
    try:
        restate = services.restate_binary()
        libs = kafka.ensure_jars(say)
    except DurabenchError as exc:
        raise UserError(f"the image holds the Restate server and Kafka: {exc}") from None
    out[f"restate-server-{services.RESTATE_VERSION}/{services.RESTATE_BINARY}"] = restate
    for path in sorted(p for p in libs.rglob("*") if p.is_file()):
        out[f"{libs.parent.name}/libs/{path.relative_to(libs)}"] = path
    return out


def temporal_server_dir(servers: dict[str, Path]) -> str:
    """The image's directory of the Temporal server binaries (its $DURABENCH_TEMPORAL_SERVER_DIR)."""
    arc = next(arc for arc in servers if arc.startswith("temporal-server/"))
    return f"{IMAGE_CACHE}/{Path(arc).parent}"


# -- base image ----------------------------------------------------------------------------------

def apt_mirror() -> str:
    """The Debian mirror apt itself is configured with (deb822 ``URIs:`` or a ``deb`` line)."""
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            text = path.read_text()
        except OSError:
            continue
        for match in re.finditer(r"^\s*(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(\S+)", text, re.MULTILINE):
            uri = match.group(1)
            if "security" not in uri and uri.startswith(("http://", "https://")):
                return uri
    return DEFAULT_MIRROR


def base_tag() -> str:
    mirror = apt_mirror()
    return f"{BASE_REPOSITORY}:{SUITE}-{_digest([SUITE.encode(), ','.join(BASE_PACKAGES).encode(), mirror.encode()])}"


def ensure_base(client: Any, say: Say) -> str:
    """The debootstrap base image (imported once, then cached by tag); returns its tag."""
    import docker.errors

    tag = base_tag()
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    if shutil.which("debootstrap") is None:
        raise UserError("building the base image needs debootstrap (apt-get install debootstrap), "
                        "or pass --base IMAGE (e.g. debian:bookworm-slim where a registry is reachable)")
    if os.geteuid() != 0:
        raise UserError("debootstrap needs root; run `durabench image build` as root once, or pass --base IMAGE")
    mirror = apt_mirror()
    started = time.monotonic()
    say(f"image: debootstrap --variant=minbase {SUITE} from {mirror} (once)")
    with tempfile.TemporaryDirectory(prefix="durabench-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        done = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(rootfs), mirror],
            capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
            raise UserError(f"debootstrap failed: {' | '.join(tail)}")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "var/cache/debconf"):  # not in the image
            for path in (rootfs / junk).glob("*"):
                if path.is_file():
                    path.unlink()
        tarball = Path(tmp) / "rootfs.tar"
        with tarfile.open(tarball, "w") as tar:
            tar.add(rootfs, arcname=".")
        say(f"image: importing the base as {tag}")
        repository, tag_part = tag.split(":")
        client.api.import_image_from_file(str(tarball), repository=repository, tag=tag_part)
    say(f"image: base {tag} ready in {time.monotonic() - started:.0f}s")
    return tag


# -- wheelhouse and context --------------------------------------------------------------------

def wheelhouse(say: Say) -> Path:
    """Wheels of every runtime dependency, filled by the host's pip (cached by the dependency list)."""
    reqs = requirements()
    key = _digest([json.dumps(reqs).encode(), sys.version.encode(), IMAGE_PYTHON.encode()])
    target = cache_dir() / f"wheelhouse-{key}"
    if (target / "requirements.txt").exists():
        return target
    say(f"image: collecting wheels of {len(reqs)} dependencies into {target} (pip wheel; once)")
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # wheels for the host's Python (sdists built into wheels here), then those the image's Python needs
    # on top: environment markers such as python_full_version < "3.11.3" differ between the two
    todo = reqs
    for _ in range(5):
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(tmp), *todo],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise UserError(f"pip wheel failed: {' | '.join(done.stderr.strip().splitlines()[-3:])}")
        todo = image_only_requirements(tmp)
        if not todo:
            break
    (tmp / "requirements.txt").write_text("\n".join(reqs) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def image_only_requirements(wheel_dir: Path) -> list[str]:
    """Dependencies of the wheels in ``wheel_dir`` that the image's Python needs and the host's did not
    (their marker is true for IMAGE_PYTHON only), and that no wheel there provides yet."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    host = {str(k): str(v) for k, v in default_environment().items()}
    host["extra"] = ""
    image = {**host, "python_full_version": IMAGE_PYTHON, "python_version": ".".join(IMAGE_PYTHON.split(".")[:2])}
    have = {canonicalize_name(w.name.split("-")[0]) for w in wheel_dir.glob("*.whl")}
    out: set[str] = set()
    for wheel in wheel_dir.glob("*.whl"):
        with zipfile.ZipFile(wheel) as z:
            meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode(errors="replace")
        for line in meta.splitlines():
            if not line.startswith("Requires-Dist:"):
                continue
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is None or canonicalize_name(req.name) in have:
                continue
            if req.marker.evaluate(image) and not req.marker.evaluate(host):
                out.add(f"{req.name}{req.specifier}")
    return sorted(out)


def project_wheel(out_dir: Path) -> Path:
    """The project's wheel and its plugins' into ``out_dir``; returns the project's."""
    for source in (ROOT, *(ROOT / plugin for plugin in PLUGINS)):
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                               "--wheel-dir", str(out_dir), str(source)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise UserError(f"building the wheel of {source.name} failed: "
                            f"{' | '.join(done.stderr.strip().splitlines()[-3:])}")
    return next(out_dir.glob("durabench-[0-9]*.whl"))


def write_context(path: Path, wheels: Path, dist: Path, go: dict[str, Path],
                  servers: dict[str, Path] | None = None) -> None:
    """The build context as a tar file: Dockerfile, wheelhouse/, dist/ (the project's and its plugins'
    wheels), cache/ (the server files, see ``server_files``) and go/ (the Go workers, and go/BINARIES
    naming them)."""
    with tarfile.open(path, "w") as tar:
        tar.add(ROOT / "Dockerfile", arcname="Dockerfile")
        tar.add(wheels, arcname="wheelhouse")
        tar.add(dist, arcname="dist")
        for arc, host_path in sorted((servers or {}).items()):
            tar.add(host_path, arcname=f"cache/{arc}")
        for name, binary in sorted(go.items()):
            tar.add(binary, arcname=f"go/{name}")
        listing = "".join(f"{name}\n" for name in sorted(go)).encode()
        info = tarfile.TarInfo(f"go/{GO_LIST}")
        info.size, info.mode, info.mtime = len(listing), 0o644, int(time.time())
        tar.addfile(info, io.BytesIO(listing))


# -- the image ---------------------------------------------------------------------------------

def _tag_of(base: str, client: Any, go: dict[str, Path], servers: dict[str, Path]) -> str:
    return f"{REPOSITORY}:{content_hash(client.images.get(base).id, go, servers)}"


def find(client: Any, base: str | None = None, go: dict[str, Path] | None = None,
         servers: dict[str, Path] | None = None) -> str | None:
    """The tag of the image of this exact source tree, if built."""
    import docker.errors

    try:
        tag = _tag_of(base or base_tag(), client, go_binaries() if go is None else go,
                      server_files() if servers is None else servers)
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        return None


def ensure(client: Any, say: Say, base: str | None = None, force: bool = False) -> str:
    """The runtime image of this source tree: built at first use, then found by its content hash."""
    if base is None:
        base = ensure_base(client, say)
    else:
        _pull_if_missing(client, base, say)
    go = go_binaries(say)
    servers = server_files(say)
    tag = _tag_of(base, client, go, servers)
    if not force and find(client, base, go, servers) == tag:
        client.images.get(tag).tag(REPOSITORY, "latest")  # another checkout may have moved it since
        return tag
    started = time.monotonic()
    wheels = wheelhouse(say)
    say(f"image: building {tag} from the Dockerfile (base {base}; no network inside the build)")
    with tempfile.TemporaryDirectory(prefix="durabench-context-") as tmp:
        dist = Path(tmp) / "dist"
        dist.mkdir()
        project_wheel(dist)
        context = Path(tmp) / "context.tar"
        write_context(context, wheels, dist, go, servers)
        with context.open("rb") as fh:
            log = _build(client, fh, tag, {"BASE": base, "TEMPORAL_SERVER_DIR": temporal_server_dir(servers)}, say)
    client.images.get(tag).tag(REPOSITORY, "latest")
    _remove_older(client, tag)
    cache_dir().mkdir(parents=True, exist_ok=True)
    (cache_dir() / "image-build.log").write_text(log)  # the builder's output of the latest build
    say(f"image: {tag} built in {time.monotonic() - started:.0f}s")
    return tag


def _remove_older(client: Any, keep: str) -> None:
    """Untag the images this checkout built from its earlier states (their layers stay as the build
    cache); one that a container still uses is left alone. Images of other checkouts on the same
    daemon (another clone, a CI run) are theirs: a build here never takes their tags away."""
    for img in client.images.list(name=REPOSITORY, filters={"label": f"{TREE_LABEL}={ROOT}"}):
        for other in img.tags:
            if other not in (keep, f"{REPOSITORY}:latest"):
                with contextlib.suppress(Exception):
                    client.images.remove(other)


def _build(client: Any, fileobj: io.BufferedReader, tag: str, buildargs: dict[str, str], say: Say) -> str:
    lines: list[str] = []
    stream = client.api.build(fileobj=fileobj, custom_context=True, tag=tag, buildargs=buildargs,
                              labels={TREE_LABEL: str(ROOT)}, network_mode="none", rm=True, forcerm=True,
                              decode=True)
    for chunk in stream:
        if "error" in chunk:
            tail = " | ".join(line.strip() for line in lines[-3:] if line.strip())
            raise UserError(f"image build failed: {chunk['error'].strip()} ({tail})")
        text = chunk.get("stream", "")
        if text:
            lines.append(text)
            if text.startswith("Step "):
                say(f"image: {text.strip()[:100]}")
    return "".join(lines)


def _pull_if_missing(client: Any, base: str, say: Say) -> None:
    import docker.errors

    try:
        client.images.get(base)
    except docker.errors.ImageNotFound:
        say(f"image: pulling {base}")
        try:
            client.images.pull(base)
        except docker.errors.APIError as exc:
            raise UserError(f"base image {base!r} is not here and cannot be pulled ({exc.explanation}); "
                            "leave out --base to build one with debootstrap") from None


def describe(client: Any, tag: str) -> dict[str, Any]:
    image = client.images.get(tag)
    return {"tag": tag, "id": image.id, "size_bytes": image.attrs.get("Size"),
            "created": image.attrs.get("Created"), "go_workers": sorted(go_binaries()),
            "servers": sorted({arc.split("/")[0] for arc in server_files()})}
