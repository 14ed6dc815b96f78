"""scripts/install-edge and scripts/uninstall-edge lay out an edge PC as documented.

Both scripts run as subprocesses against a temporary root (`--root DIR`), never the host's /:
the release venv, the `venv` symlink, the site config, the unit and its [Install] symlink
(`systemctl --root` enables offline; no systemd runs as PID 1 here), the system user in
DIR/etc/passwd, the state and cache directories with their owner, then an upgrade, a rollback,
an upgrade the site's config rejects, uninstall and purge.

Cost and shape: every install builds a real venv (numba, llvmlite, numpy, asyncua...), about
35 s here with pip's cache warm. So the tests share one installed root (module fixture) and run
in file order: read-only checks first, then upgrade, rejected upgrade, uninstall. Each test
takes its "before" from the root itself, so any one of them also passes alone. The first install
takes the default path (pip and the configured index); later ones use `--wheelhouse` with a
wheelhouse built once for the module (about 10 s), which covers the offline-edge-PC path. It is
not faster: installing ~30 wheels into a venv costs the same from a wheelhouse or pip's cache.
The whole module takes about 2 min on this 2-core machine.

The scripts need root (useradd, chown to the target's linegate uid); the tests fail, never skip,
without it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "scripts" / "install-edge"
UNINSTALL = REPO / "scripts" / "uninstall-edge"
SHIPPED_CONFIG = REPO / "config" / "line1.toml"
SHIPPED_UNIT = REPO / "config" / "linegate.service"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
VERSION: str = PYPROJECT["project"]["version"]
RELEASE_NAME = re.compile(rf"^{re.escape(VERSION)}-\d{{8}}T\d{{6}}Z(-\d+)?$")
SCRIPT_TIMEOUT_S = 240


@dataclass(frozen=True)
class ScriptRun:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def describe(self) -> str:
        return f"exit {self.returncode} after {self.seconds:.0f} s\n{self.stdout}\n{self.stderr[-3000:]}"


@dataclass(frozen=True)
class EdgeRoot:
    """A filesystem tree the installer has run on, and paths into it."""

    path: Path

    def at(self, absolute: str) -> Path:
        return self.path / absolute.lstrip("/")

    @property
    def releases(self) -> list[str]:
        return sorted(p.name for p in self.at("/opt/linegate/releases").iterdir())

    @property
    def current(self) -> str:
        """The symlink target as written (relative, so it is valid inside and outside DIR)."""
        return os.readlink(self.at("/opt/linegate/venv"))

    def account(self, file: str, name: str) -> list[str] | None:
        for line in self.at(file).read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name:
                return fields
        return None


def run_script(script: Path, *args: str) -> ScriptRun:
    start = time.monotonic()
    done = subprocess.run(
        [str(script), *args], capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S, check=False
    )
    return ScriptRun(done.returncode, done.stdout, done.stderr, time.monotonic() - start)


def run_installed(
    root: EdgeRoot, tmp_path: Path, program: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """A program from the current release's venv, with a throw-away numba cache. Run outside the
    checkout: `python -c` would otherwise import the checkout's packages from the working directory."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    return subprocess.run(
        [str(root.at(f"/opt/linegate/venv/bin/{program}")), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )


def imported_from(root: EdgeRoot, tmp_path: Path) -> Path:
    """Where the current release's Python finds the gateway package."""
    done = run_installed(root, tmp_path, "python", "-c", "import gateway; print(gateway.__file__)")
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip()).resolve()


def switch_current(root: EdgeRoot, release: str) -> None:
    """The documented rollback: point the symlink at another release, atomically."""
    staged = root.at("/opt/linegate/venv.new")
    staged.symlink_to(f"releases/{release}/venv")
    staged.replace(root.at("/opt/linegate/venv"))


@pytest.fixture(scope="module")
def _as_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("install-edge needs root (useradd --prefix, chown): run the tests as root")


@pytest.fixture(scope="module")
def wheelhouse(_as_root: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels of linegate's dependencies and build requirements, for offline installs."""
    path = tmp_path_factory.mktemp("wheelhouse")
    requirements = [*PYPROJECT["project"]["dependencies"], *PYPROJECT["build-system"]["requires"]]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--disable-pip-version-check",
            "-w",
            str(path),
            *requirements,
        ],
        check=True,
        capture_output=True,
        timeout=SCRIPT_TIMEOUT_S,
    )
    return path


@pytest.fixture(scope="module")
def installed(_as_root: None, tmp_path_factory: pytest.TempPathFactory) -> EdgeRoot:
    root = EdgeRoot(tmp_path_factory.mktemp("edge-root"))
    run = run_script(INSTALL, "--root", str(root.path))
    assert run.returncode == 0, run.describe()
    return root


def test_install_lays_out_release_config_unit_user_and_directories(installed: EdgeRoot) -> None:
    root = installed
    [release] = root.releases
    assert RELEASE_NAME.match(release), release
    assert root.current == f"releases/{release}/venv"
    assert root.at("/opt/linegate/venv/bin/linegate").is_file()

    user = root.account("/etc/passwd", "linegate")
    group = root.account("/etc/group", "linegate")
    assert user is not None, root.at("/etc/passwd").read_text()
    assert group is not None
    uid, gid = int(user[2]), int(user[3])
    assert uid < 1000, "not a system uid"
    assert gid == int(group[2])
    assert user[5:] == ["/var/lib/linegate", "/usr/sbin/nologin"]

    config = root.at("/etc/linegate/line.toml")
    assert config.read_bytes() == SHIPPED_CONFIG.read_bytes()
    assert (config.stat().st_mode & 0o777, config.stat().st_uid, config.stat().st_gid) == (0o640, 0, gid)

    assert root.at("/etc/systemd/system/linegate.service").read_bytes() == SHIPPED_UNIT.read_bytes()
    wants = root.at("/etc/systemd/system/multi-user.target.wants/linegate.service")
    assert os.readlink(wants) == "/etc/systemd/system/linegate.service"

    for directory in ("/var/lib/linegate", "/var/cache/linegate"):
        st = root.at(directory).stat()
        assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o700, uid, gid), directory


def test_installed_entry_point_accepts_the_installed_config_from_its_own_copy(
    installed: EdgeRoot, tmp_path: Path
) -> None:
    root = installed
    config = root.at("/etc/linegate/line.toml")
    done = run_installed(root, tmp_path, "linegate", "check-config", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    # Non-editable: the release runs its own copy, so later edits to the checkout cannot change it.
    assert imported_from(root, tmp_path).is_relative_to(root.at("/opt/linegate/releases").resolve())


def test_upgrade_keeps_site_config_and_old_release_so_rollback_works(
    installed: EdgeRoot, wheelhouse: Path, tmp_path: Path
) -> None:
    root = installed
    config = root.at("/etc/linegate/line.toml")
    site_config = config.read_text().replace('site = "winston-salem"', 'site = "edge-test"')
    assert site_config != SHIPPED_CONFIG.read_text()
    config.write_text(site_config)
    before = root.releases

    run = run_script(INSTALL, "--root", str(root.path), "--wheelhouse", str(wheelhouse))
    assert run.returncode == 0, run.describe()

    assert config.read_text() == site_config
    [new] = set(root.releases) - set(before)
    assert set(before) < set(root.releases)
    assert root.current == f"releases/{new}/venv"
    assert imported_from(root, tmp_path).is_relative_to(root.at(f"/opt/linegate/releases/{new}").resolve())
    assert root.at("/etc/systemd/system/multi-user.target.wants/linegate.service").is_symlink()

    old = before[-1]
    switch_current(root, old)
    assert imported_from(root, tmp_path).is_relative_to(root.at(f"/opt/linegate/releases/{old}").resolve())
    done = run_installed(root, tmp_path, "linegate", "check-config", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    switch_current(root, new)


def test_upgrade_whose_release_rejects_the_site_config_changes_nothing(
    installed: EdgeRoot, wheelhouse: Path
) -> None:
    root = installed
    config = root.at("/etc/linegate/line.toml")
    broken = config.read_text() + "\n[not_a_section]\nkey = 1\n"
    config.write_text(broken)
    releases, current = root.releases, root.current
    try:
        run = run_script(INSTALL, "--root", str(root.path), "--wheelhouse", str(wheelhouse))
    finally:
        config.write_text(broken.removesuffix("\n[not_a_section]\nkey = 1\n"))

    assert run.returncode != 0, run.describe()
    assert "rejects" in run.stderr
    assert (root.releases, root.current) == (releases, current)


def test_uninstall_keeps_site_data_and_purge_removes_it(installed: EdgeRoot) -> None:
    root = installed
    buffer = root.at("/var/lib/linegate/buffer.sqlite")
    buffer.write_bytes(b"unsent samples")
    drop_in = root.at("/etc/systemd/system/linegate.service.d/site.conf")
    drop_in.parent.mkdir(parents=True, exist_ok=True)
    drop_in.write_text("[Service]\nEnvironment=SITE=1\n")
    config = root.at("/etc/linegate/line.toml").read_bytes()

    for attempt in ("first", "repeated"):
        run = run_script(UNINSTALL, "--root", str(root.path))
        assert run.returncode == 0, f"{attempt}: {run.describe()}"
        assert not root.at("/opt/linegate").exists()
        assert not root.at("/var/cache/linegate").exists()
        assert not root.at("/etc/systemd/system/linegate.service").exists()
        assert not root.at("/etc/systemd/system/multi-user.target.wants/linegate.service").is_symlink()
        assert root.at("/etc/linegate/line.toml").read_bytes() == config
        assert buffer.read_bytes() == b"unsent samples"
        assert drop_in.is_file()
        assert root.account("/etc/passwd", "linegate") is not None

    run = run_script(UNINSTALL, "--root", str(root.path), "--purge")
    assert run.returncode == 0, run.describe()
    for gone in ("/etc/linegate", "/var/lib/linegate", "/etc/systemd/system/linegate.service.d"):
        assert not root.at(gone).exists(), gone
    assert root.account("/etc/passwd", "linegate") is None
    assert root.account("/etc/group", "linegate") is None
    assert root.account("/etc/passwd", "root") is not None
