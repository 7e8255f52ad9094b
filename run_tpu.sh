#!/usr/bin/env bash
# Run prompt_tuning_jax on a Cloud TPU VM: one host or a pod slice (every worker runs
# the same program; jax finds the other hosts itself).
#
# Usage: ./run_tpu.sh [global options] COMMAND [command options] [-- ARGS...]
#
# Global options (or environment variables):
#   --name NAME      TPU name                     ($TPU_NAME)
#   --zone ZONE      e.g. europe-west4-a          ($TPU_ZONE)
#   --project ID     Google Cloud project         ($TPU_PROJECT; default: gcloud's)
#   --dir DIR        checkout on the workers, relative to $HOME (default prompt_tuning_jax)
#   --dry-run        print every command instead of running it
#
# Commands:
#   create [--accelerator-type v3-32] [--version tpu-ubuntu2204-base] [EXTRA gcloud args]
#   setup  [--repo URL] [--branch main] | [--copy]
#          on every worker: clone URL (or copy this checkout), make a venv, pip install -e .[tpu]
#   launch [--module prompt_tuning_jax.train] [--log logs/train.log] [--] ARGS...
#          on every worker: nohup python -m MODULE ARGS... > LOG (arguments keep spaces/quotes)
#   logs   [--worker 0|all] [--lines 100] [--no-follow]
#   stop   kill the run, then every process still holding /dev/accel* or /dev/vfio/*
#   delete
#
# Example:
#   ./run_tpu.sh --name pt --zone europe-west4-a launch -- \
#     --gin_file=gin/runs/xxl_superglue.gin --gin.MODEL_DIR="'gs://bucket/run 1'"
set -euo pipefail

NAME="${TPU_NAME:-}"
ZONE="${TPU_ZONE:-}"
PROJECT="${TPU_PROJECT:-}"
DIR="prompt_tuning_jax"
DRY_RUN=0
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

die() {
  echo "run_tpu.sh: $*" >&2
  exit 2
}

# Single-quote one word for the remote POSIX shell: it' s -> 'it'\''s'.
quote() {
  local s="${1//\'/\'\\\'\'}"
  printf "'%s'" "$s"
}

# One word as a shell must see it: bare when it has no special characters, else quoted.
word() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then printf '%s' "$1"; else quote "$1"; fi
}

# Every argument as a word, joined with spaces.
words() {
  local out="" arg
  for arg in "$@"; do
    out+="${out:+ }$(word "$arg")"
  done
  printf '%s' "$out"
}

# Run a command, or with --dry-run print it (copy-pasteable) and run nothing.
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%s\n' "$(words "$@")"
  else
    "$@"
  fi
}

need_target() {
  [[ -n "$NAME" ]] || die "no TPU name: pass --name NAME or set TPU_NAME"
  [[ -n "$ZONE" ]] || die "no zone: pass --zone ZONE or set TPU_ZONE"
}

# gcloud compute tpus tpu-vm VERB NAME --zone ZONE [--project P] ARGS...
tpu_vm() {
  local verb="$1"
  shift
  local where=(--zone "$ZONE")
  if [[ -n "$PROJECT" ]]; then where+=(--project "$PROJECT"); fi
  run gcloud compute tpus tpu-vm "$verb" "$NAME" "${where[@]}" "$@"
}

# Run one shell command string on the given worker(s).
on_workers() {
  local worker="$1" command="$2"
  tpu_vm ssh "--worker=$worker" --command "$command"
}

cmd_create() {
  local type="v3-8" version="tpu-ubuntu2204-base"
  local extra=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --accelerator-type) type="${2:?--accelerator-type needs a value}"; shift 2 ;;
      --version) version="${2:?--version needs a value}"; shift 2 ;;
      *) extra+=("$1"); shift ;;
    esac
  done
  tpu_vm create --accelerator-type "$type" --version "$version" "${extra[@]}"
}

venv_install() {
  # Ubuntu images may lack python3-venv; install it only when venv creation fails.
  printf '%s' "cd $(word "$DIR") && { python3 -m venv .venv || { sudo apt-get update -qq && " \
    "sudo apt-get install -y -qq python3-venv && python3 -m venv .venv; }; } && " \
    ". .venv/bin/activate && pip install -q -U pip && pip install -q -e '.[tpu]'"
}

cmd_setup() {
  local repo="${REPO_URL:-}" branch="main" copy=0
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --repo) repo="${2:?--repo needs a URL}"; shift 2 ;;
      --branch) branch="${2:?--branch needs a value}"; shift 2 ;;
      --copy) copy=1; shift ;;
      *) die "setup: unknown option $1" ;;
    esac
  done
  local d
  d="$(word "$DIR")"
  if [[ "$copy" == 1 ]]; then
    local tarball
    tarball="${TMPDIR:-/tmp}/prompt_tuning_jax.$$.tar.gz"
    run tar -czf "$tarball" --exclude=.git --exclude=.venv --exclude=__pycache__ -C "$SCRIPT_DIR" .
    local where=(--zone "$ZONE")
    if [[ -n "$PROJECT" ]]; then where+=(--project "$PROJECT"); fi
    run gcloud compute tpus tpu-vm scp "$tarball" "$NAME:prompt_tuning_jax.tar.gz" "${where[@]}" --worker=all
    run rm -f "$tarball"
    on_workers all "mkdir -p $d && tar -xzf prompt_tuning_jax.tar.gz -C $d && rm prompt_tuning_jax.tar.gz && $(venv_install)"
  else
    [[ -n "$repo" ]] || die "setup: pass --repo URL (or set REPO_URL), or --copy to upload this checkout"
    local b r
    b="$(word "$branch")"
    r="$(word "$repo")"
    on_workers all "if [ -d $d/.git ]; then git -C $d fetch -q origin && git -C $d checkout -q $b && git -C $d pull -q --ff-only; else git clone -q --branch $b $r $d; fi && $(venv_install)"
  fi
}

cmd_launch() {
  local module="prompt_tuning_jax.train" log="logs/train.log"
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --module) module="${2:?--module needs a value}"; shift 2 ;;
      --log) log="${2:?--log needs a value}"; shift 2 ;;
      --) shift; break ;;
      *) break ;;
    esac
  done
  local l
  l="$(word "$log")"
  # Only `nohup python` is backgrounded, so $! is its pid (`stop` reads logs/train.pid).
  on_workers all "cd $(word "$DIR") && . .venv/bin/activate && mkdir -p logs \"\$(dirname $l)\" && { nohup python -m $(word "$module") $(words "$@") > $l 2>&1 < /dev/null & echo \$! > logs/train.pid; }"
}

cmd_logs() {
  local worker=0 lines=100 follow="-f" log="logs/train.log"
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --worker) worker="${2:?--worker needs 0, 1, ... or all}"; shift 2 ;;
      --lines) lines="${2:?--lines needs a number}"; shift 2 ;;
      --log) log="${2:?--log needs a value}"; shift 2 ;;
      --no-follow) follow=""; shift ;;
      *) die "logs: unknown option $1" ;;
    esac
  done
  on_workers "$worker" "tail -n $(word "$lines") ${follow:+$follow }$(word "$DIR/$log")"
}

cmd_stop() {
  # 1) the launched run by its pid; 2) whatever still holds the TPU device files
  # (a crashed worker leaves its peers holding them), found by pid with lsof or fuser.
  local free_tpu
  # shellcheck disable=SC2016  # expanded on the worker, not here
  free_tpu='pids=$( (sudo lsof -t /dev/accel* /dev/vfio/* 2>/dev/null || sudo fuser /dev/accel* /dev/vfio/* 2>/dev/null) | tr -s " \n" "\n" | sort -u | tr "\n" " "); if [ -n "$pids" ]; then echo "freeing TPU: killing $pids"; sudo kill -9 $pids; fi; true'
  on_workers all "cd $(word "$DIR") 2>/dev/null && if [ -f logs/train.pid ]; then kill \"\$(cat logs/train.pid)\" 2>/dev/null; rm -f logs/train.pid; sleep 5; fi; $free_tpu"
}

cmd_delete() {
  tpu_vm delete --quiet
}

main() {
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --name) NAME="${2:?--name needs a value}"; shift 2 ;;
      --zone) ZONE="${2:?--zone needs a value}"; shift 2 ;;
      --project) PROJECT="${2:?--project needs a value}"; shift 2 ;;
      --dir) DIR="${2:?--dir needs a value}"; shift 2 ;;
      --dry-run) DRY_RUN=1; shift ;;
      -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
      -*) die "unknown option $1 (see --help)" ;;
      *) break ;;
    esac
  done
  [[ $# -gt 0 ]] || die "no command; one of: create setup launch logs stop delete (see --help)"
  local command="$1"
  shift
  case "$command" in
    create|setup|launch|logs|stop|delete) need_target; "cmd_$command" "$@" ;;
    *) die "unknown command $command; one of: create setup launch logs stop delete" ;;
  esac
}

main "$@"
