"""The wheel: it ships every package and the benchmark/recipe YAMLs, and the installed package, away from the
checkout, lists its datasets, finds its recipes and runs a fixture eval."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from marble_eval import paths

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
# What the build reads from the checkout (pyproject's readme, packages and package-dir).
BUILD_INPUTS = ("pyproject.toml", "README.md", "marble_eval", *SETUPTOOLS["package-dir"].values())
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]


def _code_packages() -> set[str]:
    return {".".join(init.parent.relative_to(REPO).parts) for init in (REPO / "marble_eval").rglob("__init__.py")}


def test_pyproject_lists_every_package_and_maps_the_yaml_folders() -> None:
    data_packages = {f"marble_eval.{name}": folder for name, folder in paths.SHIPPED_FOLDERS.items()}
    assert set(SETUPTOOLS["packages"]) == _code_packages() | set(data_packages), \
        "pyproject [tool.setuptools] packages must list every folder of marble_eval with an __init__.py"
    assert SETUPTOOLS["package-dir"] == data_packages
    for package, folder in data_packages.items():
        assert SETUPTOOLS["package-data"][package] == ["*.yaml"]
        assert sorted((REPO / folder).glob("*.yaml")), f"{folder}/ holds no YAML"


def test_a_checkout_reads_the_top_level_folders_and_the_overrides_win(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MARBLE_EVAL_BENCHMARKS", raising=False)
    monkeypatch.delenv("MARBLE_EVAL_PROBES", raising=False)
    assert paths.source_checkout() == REPO
    assert paths.benchmarks_dir() == REPO / "benchmarks" and paths.probes_dir() == REPO / "probes"
    monkeypatch.setenv("MARBLE_EVAL_BENCHMARKS", str(tmp_path / "b"))
    monkeypatch.setenv("MARBLE_EVAL_PROBES", str(tmp_path / "p"))
    assert paths.benchmarks_dir() == tmp_path / "b" and paths.probes_dir() == tmp_path / "p"


@dataclass(frozen=True)
class Installed:
    wheel: Path
    site: Path      # where the wheel is installed (pip --target)
    root: Path      # a git repo of another project that the install happens to sit in
    python: str
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([self.python, "-s", *args], capture_output=True, text=True, env=self.env,
                              cwd=self.root, timeout=timeout)


def _base_python() -> str:
    """The interpreter the venv was made from: it does not process the venv's .pth files (the editable
    install of the checkout), so only PYTHONPATH decides where marble_eval comes from."""
    if sys.prefix == sys.base_prefix:
        return sys.executable
    for name in (f"python{sys.version_info.major}.{sys.version_info.minor}", f"python{sys.version_info.major}"):
        candidate = Path(sys.base_prefix) / "bin" / name
        if candidate.is_file():
            return str(candidate)
    pytest.skip(f"no base interpreter under {sys.base_prefix}/bin")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel built from a copy of the checkout, installed into a folder of an unrelated git repo."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy: building in the checkout would leave build/ whose stale files ship
    source.mkdir()
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    # absolute paths: pip reads a bare name as a requirement to download
    subprocess.run([*PIP, "wheel", "--no-index", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"),
                    str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp / "dist").glob("marble_eval-*.whl")
    root = tmp / "other-project"
    site = root / "site"
    subprocess.run([*PIP, "install", "--no-index", "--no-deps", "--target", str(site), str(wheel)], check=True,
                   capture_output=True, timeout=300)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", "-C", str(root)]
    subprocess.run([*git, "init", "-q"], check=True, timeout=60)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "unrelated"], check=True, timeout=60)
    libraries = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PYTHONHOME", "MARBLE_EVAL_BENCHMARKS", "MARBLE_EVAL_PROBES")}
    env.update(PYTHONPATH=os.pathsep.join([str(site), *libraries]), MARBLE_EVAL_HOME=str(tmp / "home"),
               HF_HUB_OFFLINE="1", PYTHONNOUSERSITE="1")
    return Installed(wheel, site, root, _base_python(), env)


@pytest.mark.integration
def test_the_wheel_holds_every_yaml_and_no_tests(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    for name, folder in paths.SHIPPED_FOLDERS.items():
        for yaml in (REPO / folder).glob("*.yaml"):
            assert f"marble_eval/{name}/{yaml.name}" in names
    assert not [name for name in names if name.startswith(("tests/", "bench/", "benchmarks/", "probes/"))]


@pytest.mark.integration
def test_the_installed_package_lists_its_datasets_and_finds_its_recipes(installed: Installed) -> None:
    where = installed.run("-c", "import json, marble_eval, marble_eval.paths as p; "
                          "from marble_eval.probes.recipe import known_recipes, load_recipe; "
                          "print(json.dumps([marble_eval.__file__, str(p.benchmarks_dir()), str(p.probes_dir()), "
                          "p.source_checkout(), known_recipes(), load_recipe('mlp').head]))")
    assert where.returncode == 0, where.stderr
    module, benchmarks, probes, checkout, recipes, head = json.loads(where.stdout)
    for path in (module, benchmarks, probes):
        assert Path(path).is_relative_to(installed.site), where.stdout
    assert checkout is None
    assert recipes == sorted(path.stem for path in (REPO / "probes").glob("*.yaml")) and head == "mlp"

    listed = installed.run("-m", "marble_eval", "datasets", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert sorted(row["name"] for row in rows) == sorted(path.stem for path in (REPO / "benchmarks").glob("*.yaml"))
    assert not [row for row in rows if "error" in row]


@pytest.mark.integration
def test_the_installed_package_runs_a_fixture_eval(installed: Installed, small_fixture_yaml: Path) -> None:
    results = installed.root / "results"
    run = installed.run("-m", "marble_eval", "eval", "--model", "fixture", "--dataset", str(small_fixture_yaml),
                        "--recipe", "mlp", "--seeds", "1", "--grid", "quick", "--max-epochs", "2", "--no-progress",
                        "--results-dir", str(results), timeout=600)
    assert run.returncode == 0, run.stderr
    (path,) = results.glob("tiny-fixture/*.json")
    result = json.loads(path.read_text())
    assert result["protocol"]["recipe"]["name"] == "mlp"
    assert result["dataset"]["splits"] == {"train": 12, "valid": 6, "test": 6}
    # the repo around the install is not marble-eval's: no commit of it is recorded as the code's
    assert result["environment"]["git_commit"] is None
