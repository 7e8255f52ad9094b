#!/usr/bin/env bash
# Set up one Cloud TPU VM worker for prompt_tuning_jax. run_tpu.sh copies this file to every
# worker and runs it there; it also runs on any Linux host with bash.
#
# Why uv: Google's TPU VM images (tpu-ubuntu2204-base for v4 and older, v2-alpha-tpuv5,
# v2-alpha-tpuv5-lite, v2-alpha-tpuv6e) are Ubuntu 22.04, whose python3 is 3.10, while
# jax 0.10.2 and setup.py need Python 3.11 or newer. So the project venv never uses the
# image's python3: uv supplies the interpreter (one of its managed CPython builds, or a
# matching one already on the machine), whatever the image ships.
#
# Usage:
#   tpu_worker_setup.sh install --dir DIR [--python 3.11] [--extras tpu]
#       uv (python3 -m pip install --user uv when missing), DIR/.venv on Python X.Y (kept
#       when it already is X.Y, else rebuilt), pip inside it (ensurepip), then
#       `uv pip install -e 'DIR[EXTRAS]'`.
#   tpu_worker_setup.sh check --dir DIR [--timeout 600] [--platform tpu]
#       DIR/.venv/bin/python -c 'import jax; jax.devices()', bounded by --timeout; fails
#       unless the devices are of --platform. On a pod every worker must run it at once.
#
# uv's own environment variables apply (UV_PYTHON_DOWNLOADS, UV_OFFLINE, UV_INDEX_URL,
# UV_CACHE_DIR, ...). The last line is always "tpu_worker_setup: ok: ..." or
# "tpu_worker_setup: FAILED: ..."; run_tpu.sh reads it from each worker's log.
set -uo pipefail

MARK="tpu_worker_setup:"
MIN_MINOR=11  # Python 3.11: jax 0.10.2 and setup.py's python_requires

fail() {
  echo "$MARK FAILED: $*"
  exit 1
}

usage_error() {
  echo "$MARK FAILED: $* (see the header of scripts/tpu_worker_setup.sh)"
  exit 2
}

# X.Y of a Python interpreter, or nothing when it does not run.
python_version() {
  "$1" -c 'import platform; print(platform.python_version())' 2>/dev/null
}

# UV: uv on PATH, in the user's pip bin folder, or installed there with the image's pip.
find_uv() {
  UV="$(command -v uv 2>/dev/null)"
  if [ -n "$UV" ]; then return; fi
  local user_bin
  user_bin="$(python3 -m site --user-base 2>/dev/null)/bin"
  if [ ! -x "$user_bin/uv" ]; then
    echo "installing uv with python3 -m pip install --user uv"
    if ! python3 -m pip --version >/dev/null 2>&1; then
      { sudo -n apt-get update -qq && sudo -n apt-get install -y -qq python3-pip; } ||
        fail "python3 has no pip and apt-get could not install python3-pip; put uv on PATH (https://docs.astral.sh/uv/)"
    fi
    # --break-system-packages only where pip refuses --user (PEP 668 images); uv is one static binary.
    python3 -m pip install --user -q uv || python3 -m pip install --user -q --break-system-packages uv ||
      fail "python3 -m pip install --user uv failed (no route to PyPI?); put uv on PATH (https://docs.astral.sh/uv/)"
  fi
  [ -x "$user_bin/uv" ] || fail "pip installed uv but $user_bin/uv is missing"
  UV="$user_bin/uv"
}

cmd_install() {
  local dir="" python="3.$MIN_MINOR" extras="tpu"
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) dir="${2:-}"; shift 2 || usage_error "--dir needs a folder" ;;
      --python) python="${2:-}"; shift 2 || usage_error "--python needs X.Y" ;;
      --extras) extras="${2-}"; shift 2 || usage_error "--extras needs a value (may be '')" ;;
      *) usage_error "install: unknown option $1" ;;
    esac
  done
  [ -n "$dir" ] || usage_error "install: pass --dir DIR (the checkout)"
  [[ "$python" =~ ^3\.([0-9]+)$ ]] && [ "${BASH_REMATCH[1]}" -ge "$MIN_MINOR" ] ||
    usage_error "--python $python: need 3.$MIN_MINOR or newer, as X.Y (jax 0.10.2 and setup.py need it)"
  [ -f "$dir/setup.py" ] || [ -f "$dir/pyproject.toml" ] || fail "$dir has no setup.py or pyproject.toml: is the checkout there?"
  dir="$(cd "$dir" && pwd)"

  local system_python venv="$dir/.venv" have=""
  system_python="$(python_version python3)"
  echo "python3 on PATH: ${system_python:-none}; the venv gets Python $python from uv"
  find_uv
  echo "uv: $UV ($("$UV" --version 2>/dev/null))"

  if [ -x "$venv/bin/python" ]; then have="$(python_version "$venv/bin/python")"; fi
  if [ -n "$have" ] && [ "${have%.*}" = "$python" ]; then
    echo "keeping $venv (Python $have)"
  else
    [ -e "$venv" ] && echo "replacing $venv (Python ${have:-unknown}, want $python)"
    rm -rf "$venv"
    "$UV" venv --quiet --python "$python" "$venv" ||
      fail "uv could not provide Python $python (allow downloads: UV_PYTHON_DOWNLOADS=automatic, or install python$python)"
  fi
  have="$(python_version "$venv/bin/python")"
  [[ "$have" == "$python".* ]] || fail "$venv/bin/python is Python ${have:-broken}, not $python"
  # uv venvs come without pip; ensurepip adds the interpreter's bundled one (no download).
  "$venv/bin/python" -m pip --version >/dev/null 2>&1 || "$venv/bin/python" -m ensurepip >/dev/null 2>&1 ||
    echo "note: no pip in $venv (ensurepip missing); use: uv pip install --python $venv/bin/python ..."

  local target="."
  if [ -n "$extras" ]; then target=".[$extras]"; fi
  (cd "$dir" && "$UV" pip install --quiet --python .venv/bin/python -e "$target") ||
    fail "uv pip install -e '$target' failed in $dir (see the lines above)"
  echo "$MARK ok: $venv on Python $have (python3 on PATH: ${system_python:-none}); installed -e '$target'"
}

cmd_check() {
  local dir="" timeout_s=600 platform="tpu"
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) dir="${2:-}"; shift 2 || usage_error "--dir needs a folder" ;;
      --timeout) timeout_s="${2:-}"; shift 2 || usage_error "--timeout needs seconds" ;;
      --platform) platform="${2:-}"; shift 2 || usage_error "--platform needs a name (tpu, cpu, gpu)" ;;
      *) usage_error "check: unknown option $1" ;;
    esac
  done
  [ -n "$dir" ] || usage_error "check: pass --dir DIR (the checkout)"
  [[ "$timeout_s" =~ ^[0-9]+$ ]] || usage_error "--timeout $timeout_s: need whole seconds"
  [ -d "$dir" ] || fail "no folder $dir: is the checkout there?"
  dir="$(cd "$dir" && pwd)"
  local python="$dir/.venv/bin/python" out rc
  [ -x "$python" ] || fail "no $python: run install first"
  out="$(cd "$dir" && PTJ_PLATFORM="$platform" timeout -k 10 "$timeout_s" "$python" -c '
import os, platform, sys
import jax
devices = jax.devices()
kinds = sorted({d.platform for d in devices})
line = "python %s, jax %s, %d %s devices: %s" % (
    platform.python_version(), jax.__version__, len(devices), "/".join(kinds), devices)
if kinds != [os.environ["PTJ_PLATFORM"]]:
  sys.exit("jax sees %s, not %s devices (is libtpu installed, or is the TPU held by another process?): %s"
           % ("/".join(kinds), os.environ["PTJ_PLATFORM"], line))
print(line)
' 2>&1)"
  rc=$?
  printf '%s\n' "$out"
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    fail "jax.devices() gave no answer within $timeout_s s (on a pod every worker must start it at once; did another worker fail?)"
  elif [ "$rc" -ne 0 ]; then
    fail "import jax; jax.devices() failed: $(printf '%s\n' "$out" | grep -v '^[[:space:]]*$' | tail -n 1)"
  fi
  echo "$MARK ok: $(printf '%s\n' "$out" | tail -n 1)"
}

echo "$MARK host $(hostname)"
case "${1:-}" in
  install) shift; cmd_install "$@" ;;
  check) shift; cmd_check "$@" ;;
  *) usage_error "first argument: install or check, not '${1:-}'" ;;
esac
