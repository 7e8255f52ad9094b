#!/usr/bin/env bash
# Run prompt_tuning_jax on a Cloud TPU VM: one host or a pod slice (every worker runs
# the same program; jax finds the other hosts itself).
#
# Usage: ./run_tpu.sh [global options] COMMAND [command options] [-- ARGS...]
#
# Global options (or environment variables):
#   --name NAME           TPU name                     ($TPU_NAME)
#   --zone ZONE           e.g. europe-west4-a          ($TPU_ZONE)
#   --project ID          Google Cloud project         ($TPU_PROJECT; default: gcloud's)
#   --dir DIR             checkout on the workers, relative to $HOME (default prompt_tuning_jax)
#   --log-dir DIR         local folder for the workers' logs (default runs/tpu/NAME)
#   --internal-ip         reach the workers by internal IP (from a VM in the same VPC)
#   --tunnel-through-iap  reach the workers through an Identity-Aware Proxy tunnel
#   --ssh-flag FLAG       one more flag for ssh(1), e.g. '-o ProxyJump=bastion' (repeatable)
#   --scp-flag FLAG       one more flag for scp(1) (repeatable)
#   --dry-run             print every command instead of running it
#
# Commands:
#   create [--accelerator-type v3-8] [--version IMAGE] [EXTRA gcloud args]
#          IMAGE defaults to Google's JAX image for the type: v2-alpha-tpuv6e (v6e),
#          v2-alpha-tpuv5 (v5p), v2-alpha-tpuv5-lite (v5litepod), else tpu-ubuntu2204-base
#   setup  [--repo URL] [--branch main] | [--copy]   [--python 3.11] [--extras tpu] [--timeout 600]
#          on every worker: clone URL (or copy this checkout), then scripts/tpu_worker_setup.sh:
#          a venv on a Python 3.11+ from uv (tpu-ubuntu2204-base's python3 is 3.10), uv pip
#          install -e .[tpu], and `import jax; jax.devices()` on all workers at once. Fails
#          naming each worker that failed; their logs are LOG_DIR/setup/{install,check}/<worker>.log
#   launch [--module prompt_tuning_jax.train] [--log logs/train.log] [--] ARGS...
#          on every worker: nohup python -m MODULE ARGS... > LOG (arguments keep spaces/quotes)
#   logs   [--worker 0|all] [--lines 100] [--no-follow] [--log logs/train.log]
#          follow the log of one worker (or all) over ssh
#   logs --fetch [--worker all|N] [--log logs/train.log] [--to DIR]
#          copy each worker's log to DIR/worker<N>/ (default LOG_DIR)
#   stop   [--wait 300]
#          SIGTERM the run on every worker and wait up to --wait s for it to save its checkpoint
#          and exit, then SIGKILL what is left and every process still holding /dev/accel*
#          or /dev/vfio/*
#   delete
#
# Example:
#   ./run_tpu.sh --name pt --zone europe-west4-a setup --repo https://github.com/you/prompt_tuning_jax.git
#   ./run_tpu.sh --name pt --zone europe-west4-a launch -- \
#     --gin_file=models/t5_1_1_xxl.gin --gin_file=runs/prompt_tuning.gin \
#     --gin.MIXTURE_OR_TASK_NAME=superglue_rte_taskless --gin.MODEL_DIR="'gs://bucket/run 1'"
set -euo pipefail

NAME="${TPU_NAME:-}"
ZONE="${TPU_ZONE:-}"
PROJECT="${TPU_PROJECT:-}"
DIR="prompt_tuning_jax"
LOG_DIR=""
DRY_RUN=0
SSH_PASS=()  # flags for every `gcloud ... tpu-vm ssh`
SCP_PASS=()  # flags for every `gcloud ... tpu-vm scp`
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORKER_SETUP="$SCRIPT_DIR/scripts/tpu_worker_setup.sh"
MIN_PYTHON_MINOR=11  # jax 0.10.2 and setup.py's python_requires

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
  if [[ -z "$LOG_DIR" ]]; then LOG_DIR="runs/tpu/$NAME"; fi
}

# gcloud compute tpus tpu-vm VERB NAME --zone ZONE [--project P] ARGS...
tpu_vm() {
  local verb="$1"
  shift
  local where=(--zone "$ZONE")
  if [[ -n "$PROJECT" ]]; then where+=(--project "$PROJECT"); fi
  run gcloud compute tpus tpu-vm "$verb" "$NAME" "${where[@]}" "$@"
}

# gcloud compute tpus tpu-vm scp SOURCE DEST --zone ZONE [--project P] --worker=W [scp flags]
tpu_scp() {
  local source="$1" dest="$2" worker="$3"
  local where=(--zone "$ZONE")
  if [[ -n "$PROJECT" ]]; then where+=(--project "$PROJECT"); fi
  run gcloud compute tpus tpu-vm scp "$source" "$dest" "${where[@]}" "--worker=$worker" ${SCP_PASS[@]+"${SCP_PASS[@]}"}
}

# Run one shell command string on the given worker(s) [writing each one's output to DIR/<worker>.log].
on_workers() {
  local worker="$1" command="$2" output_dir="${3:-}"
  local extra=()
  if [[ -n "$output_dir" ]]; then extra=(--output-directory "$output_dir"); fi
  tpu_vm ssh "--worker=$worker" ${SSH_PASS[@]+"${SSH_PASS[@]}"} ${extra[@]+"${extra[@]}"} --command "$command"
}

# Google's image for JAX on this TPU generation (cloud.google.com/tpu/docs/runtimes).
default_image() {
  case "$1" in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-*) echo v2-alpha-tpuv5-lite ;;
    *) echo tpu-ubuntu2204-base ;;
  esac
}

cmd_create() {
  local type="v3-8" version=""
  local extra=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --accelerator-type) type="${2:?--accelerator-type needs a value}"; shift 2 ;;
      --version) version="${2:?--version needs a value}"; shift 2 ;;
      *) extra+=("$1"); shift ;;
    esac
  done
  if [[ -z "$version" ]]; then version="$(default_image "$type")"; fi
  tpu_vm create --accelerator-type "$type" --version "$version" ${extra[@]+"${extra[@]}"}
}

# Read DIR/<worker>.log of every worker (gcloud's --output-directory), print each one's
# outcome line, and exit 1 naming every worker whose log lacks "tpu_worker_setup: ok".
report_workers() {
  local step="$1" dir="$2" gcloud_rc="$3"
  if [[ "$DRY_RUN" == 1 ]]; then return; fi
  local logs=() log worker host outcome failed=0
  while IFS= read -r worker; do
    logs+=("$dir/$worker.log")
  done < <(find "$dir" -maxdepth 1 -name '*.log' -exec basename {} .log \; | sort -n)
  if [[ ${#logs[@]} -eq 0 ]]; then
    echo "run_tpu.sh: setup ($step): no worker answered (gcloud exit $gcloud_rc, no logs in $dir);" \
      "check --name, --zone and ssh access" >&2
    exit 1
  fi
  for log in "${logs[@]}"; do
    worker="$(basename "$log" .log)"
    host="$(sed -n 's/^tpu_worker_setup: host //p' "$log" | tail -n 1)"
    outcome="$(grep -E '^tpu_worker_setup: (ok|FAILED):' "$log" | tail -n 1 || true)"
    if [[ "$outcome" == "tpu_worker_setup: ok:"* ]]; then
      echo "worker $worker (${host:-unknown host}): ${outcome#tpu_worker_setup: }"
    else
      if [[ -z "$outcome" ]]; then outcome="$(grep -v '^[[:space:]]*$' "$log" | tail -n 1 || true)"; fi
      echo "run_tpu.sh: setup ($step) failed on worker $worker (${host:-unknown host}):" \
        "${outcome#tpu_worker_setup: FAILED: } [log: $log]" >&2
      failed=1
    fi
  done
  if [[ "$failed" == 1 ]]; then exit 1; fi
}

cmd_setup() {
  local repo="${REPO_URL:-}" branch="main" copy=0 python="3.$MIN_PYTHON_MINOR" extras="tpu" timeout=600
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --repo) repo="${2:?--repo needs a URL}"; shift 2 ;;
      --branch) branch="${2:?--branch needs a value}"; shift 2 ;;
      --copy) copy=1; shift ;;
      --python) python="${2:?--python needs X.Y}"; shift 2 ;;
      --extras) extras="${2?--extras needs a value (may be '')}"; shift 2 ;;
      --timeout) timeout="${2:?--timeout needs seconds}"; shift 2 ;;
      *) die "setup: unknown option $1" ;;
    esac
  done
  if ! [[ "$python" =~ ^3\.([0-9]+)$ ]] || [[ "${BASH_REMATCH[1]}" -lt "$MIN_PYTHON_MINOR" ]]; then
    die "setup --python $python: need 3.$MIN_PYTHON_MINOR or newer, as X.Y (jax 0.10.2 and setup.py require it)"
  fi
  [[ "$timeout" =~ ^[0-9]+$ ]] || die "setup --timeout $timeout: need whole seconds"
  [[ "$copy" == 1 || -n "$repo" ]] || die "setup: pass --repo URL (or set REPO_URL), or --copy to upload this checkout"
  [[ -f "$WORKER_SETUP" ]] || die "missing $WORKER_SETUP (run_tpu.sh must stay in its checkout)"
  local d fetch
  d="$(word "$DIR")"
  if [[ "$copy" == 1 ]]; then
    local tarball
    tarball="${TMPDIR:-/tmp}/prompt_tuning_jax.$$.tar.gz"
    run tar -czf "$tarball" --exclude=.git --exclude=.venv --exclude=__pycache__ --exclude=./runs \
      --exclude=./paper_runs -C "$SCRIPT_DIR" .
    tpu_scp "$tarball" "$NAME:prompt_tuning_jax.tar.gz" all
    run rm -f "$tarball"
    fetch="mkdir -p $d && tar -xzf prompt_tuning_jax.tar.gz -C $d && rm prompt_tuning_jax.tar.gz"
  else
    local b r
    b="$(word "$branch")"
    r="$(word "$repo")"
    fetch="if [ -d $d/.git ]; then git -C $d fetch -q origin && git -C $d checkout -q $b && git -C $d pull -q --ff-only; "
    fetch+="else git clone -q --branch $b $r $d; fi"
  fi
  # This checkout's worker script, whatever the branch on the workers holds.
  tpu_scp "$WORKER_SETUP" "$NAME:tpu_worker_setup.sh" all
  local out="$LOG_DIR/setup" rc=0
  run rm -rf "$out"
  run mkdir -p "$out/install" "$out/check"
  if [[ "$DRY_RUN" != 1 ]]; then
    echo "setup: installing on every worker (Python $python from uv; output in $out/install/<worker>.log)"
  fi
  on_workers all "$fetch && bash tpu_worker_setup.sh install --dir $d --python $(word "$python") --extras $(word "$extras")" \
    "$out/install" || rc=$?
  report_workers install "$out/install" "$rc"
  # All workers at once: on a pod, jax.devices() waits until every host has started it.
  if [[ "$DRY_RUN" != 1 ]]; then echo "setup: import jax; jax.devices() on every worker"; fi
  rc=0
  on_workers all "bash tpu_worker_setup.sh check --dir $d --timeout $timeout" "$out/check" || rc=$?
  report_workers check "$out/check" "$rc"
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

# WORKERS: how many workers the TPU has, from gcloud (--dry-run: prints the query, assumes 1).
count_workers() {
  local where=(--zone "$ZONE")
  if [[ -n "$PROJECT" ]]; then where+=(--project "$PROJECT"); fi
  local query=(gcloud compute tpus tpu-vm describe "$NAME" "${where[@]}" "--format=value(networkEndpoints.len())")
  if [[ "$DRY_RUN" == 1 ]]; then
    words "${query[@]}"
    printf '\n# then, for each worker N of the count above (worker 0 shown):\n'
    WORKERS=1
    return
  fi
  WORKERS="$("${query[@]}")" || die "could not count the workers of $NAME (gcloud failed); pass --worker N"
  [[ "$WORKERS" =~ ^[1-9][0-9]*$ ]] || die "could not count the workers of $NAME (gcloud said '$WORKERS'); pass --worker N"
}

fetch_logs() {
  local worker="$1" log="$2" to="$3"
  local workers=() i failed=()
  if [[ "$worker" == all ]]; then
    count_workers
    for ((i = 0; i < WORKERS; i++)); do workers+=("$i"); done
  else
    [[ "$worker" =~ ^[0-9]+$ ]] || die "logs --fetch --worker $worker: need all or a worker number"
    workers=("$worker")
  fi
  for i in "${workers[@]}"; do
    run mkdir -p "$to/worker$i"
    tpu_scp "$NAME:$DIR/$log" "$to/worker$i/$(basename "$log")" "$i" || failed+=("$i")
  done
  if [[ "$DRY_RUN" == 1 ]]; then return; fi
  if [[ ${#failed[@]} -gt 0 ]]; then
    echo "run_tpu.sh: logs --fetch: could not copy $DIR/$log from worker(s) ${failed[*]}; the others are in $to/worker<N>/" >&2
    exit 1
  fi
  echo "logs: ${#workers[@]} worker log(s) in $to/worker<N>/$(basename "$log")"
}

cmd_logs() {
  local worker="" lines=100 follow="-f" log="logs/train.log" fetch=0 to=""
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --worker) worker="${2:?--worker needs 0, 1, ... or all}"; shift 2 ;;
      --lines) lines="${2:?--lines needs a number}"; shift 2 ;;
      --log) log="${2:?--log needs a value}"; shift 2 ;;
      --no-follow) follow=""; shift ;;
      --fetch) fetch=1; shift ;;
      --to) to="${2:?--to needs a folder}"; shift 2 ;;
      *) die "logs: unknown option $1" ;;
    esac
  done
  if [[ "$fetch" == 1 ]]; then
    fetch_logs "${worker:-all}" "$log" "${to:-$LOG_DIR}"
  else
    [[ -z "$to" ]] || die "logs: --to goes with --fetch"
    on_workers "${worker:-0}" "tail -n $(word "$lines") ${follow:+$follow }$(word "$DIR/$log")"
  fi
}

# shellcheck disable=SC2016  # the single-quoted parts expand on the worker, not here
cmd_stop() {
  local wait_s=300
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --wait) wait_s="${2:?--wait needs seconds}"; shift 2 ;;
      *) die "stop: unknown option $1" ;;
    esac
  done
  [[ "$wait_s" =~ ^[0-9]+$ ]] || die "stop --wait $wait_s: need whole seconds"
  # 1) SIGTERM the launched run (it finishes its step, saves a checkpoint and exits 0; on a
  # pod every worker's process takes part in the save, so all get it at once) and wait for it;
  # a zombie (exited, parent not reaping) counts as gone. 2) SIGKILL it after --wait s, then
  # whatever still holds the TPU device files (a crashed worker leaves its peers holding them),
  # found by pid with lsof or fuser.
  local wait_run free_tpu
  wait_run='pid="$(cat logs/train.pid)"; '
  wait_run+='alive() { kill -0 "$pid" 2>/dev/null && [ "$(ps -o stat= -p "$pid" 2>/dev/null | cut -c1)" != Z ]; }; '
  wait_run+='echo "stop: SIGTERM sent to $pid on $(hostname); waiting up to WAIT s for its checkpoint"; '
  wait_run+='waited=0; while alive && [ "$waited" -lt WAIT ]; do sleep 1; waited=$((waited + 1)); done; '
  wait_run+='if alive; then echo "stop: $pid still running after WAIT s (raise --wait); killing it"; kill -9 "$pid"; '
  wait_run+='else echo "stop: $pid exited after $waited s"; fi'
  wait_run="${wait_run//WAIT/$wait_s}"
  free_tpu='pids=$( (sudo lsof -t /dev/accel* /dev/vfio/* 2>/dev/null || sudo fuser /dev/accel* /dev/vfio/* 2>/dev/null) | tr -s " \n" "\n" | sort -u | tr "\n" " "); if [ -n "$pids" ]; then echo "freeing TPU: killing $pids"; sudo kill -9 $pids; fi; true'
  on_workers all "cd $(word "$DIR") 2>/dev/null && if [ -f logs/train.pid ]; then if kill \"\$(cat logs/train.pid)\" 2>/dev/null; then $wait_run; fi; rm -f logs/train.pid; fi; $free_tpu"
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
      --log-dir) LOG_DIR="${2:?--log-dir needs a folder}"; shift 2 ;;
      --internal-ip|--tunnel-through-iap) SSH_PASS+=("$1"); SCP_PASS+=("$1"); shift ;;
      --ssh-flag) SSH_PASS+=("--ssh-flag=${2:?--ssh-flag needs a value}"); shift 2 ;;
      --scp-flag) SCP_PASS+=("--scp-flag=${2:?--scp-flag needs a value}"); shift 2 ;;
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
