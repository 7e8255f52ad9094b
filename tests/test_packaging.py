"""The wheel is the installable distribution: one top-level package carrying the gin
files, the task registrations and the bundled assets (zarr metadata dot files included)."""
import configparser
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _files(folder: pathlib.Path) -> set[str]:
  return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
          if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


@pytest.mark.slow
def test_wheel_carries_gin_files_tasks_and_assets_under_one_package(tmp_path):
  # Build from a copy: an in-tree build leaves build/ behind, whose stale files a later wheel would carry.
  src = tmp_path / "src"
  src.mkdir()
  ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
  for name in ("setup.py", "pyproject.toml", "README.md", "prompt_tuning_jax", "gin", "tasks"):
    (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, src / name, **(
        {"ignore": ignore} if (ROOT / name).is_dir() else {}))
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                  str(src), "-w", str(tmp_path / "dist")], check=True, capture_output=True, timeout=900)
  (wheel,) = (tmp_path / "dist").glob("prompt_tuning_jax-*.whl")
  names = set(zipfile.ZipFile(wheel).namelist())
  assert {n.split("/")[0] for n in names} == {"prompt_tuning_jax", wheel.name.split("-py3")[0] + ".dist-info"}
  gin_files = {f for f in _files(ROOT / "gin") if f.endswith(".gin")}
  assert "models/t5_1_1_base.gin" in gin_files
  assert {"prompt_tuning_jax/gin/" + f for f in gin_files} <= names
  tasks = {f for f in _files(ROOT / "tasks") if f.endswith(".py")}
  assert "__init__.py" in tasks and {"prompt_tuning_jax/tasks/" + f for f in tasks} <= names
  assets = _files(ROOT / "prompt_tuning_jax" / "assets")
  assert any(f.endswith("/.zarray") for f in assets) and "t5_vocab/spiece.model" in assets
  missing = {"prompt_tuning_jax/assets/" + f for f in assets} - names
  assert not missing, sorted(missing)
  (info,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
  scripts = configparser.ConfigParser()
  scripts.read_string(zipfile.ZipFile(wheel).read(info).decode())
  assert {"ptj-demo", "ptj-train", "ptj-reproduce"} <= set(scripts["console_scripts"])
