#!/usr/bin/env bash
# Prove the built images work the way the real node runs them: imported into a containerd, started with
# a read-only root filesystem, /tmp as a tmpfs (the pods' emptyDir), as the images' own non-root users.
#   pause:        starts, and stops on SIGTERM
#   runtime-cpu:  `gptoss-runtime --help`; make-tiny-checkpoint + serve --engine reference until
#                 /v2/health/ready answers 200; a chat completion through `gptoss-runtime gateway`
#   operator:     `gptoss-operator --help`
#   fetcher:      `gptoss-runtime fetch --help`, and the download code imports (no server stack in it)
# Each container has its own network namespace (loopback only), so no port of this machine is used.
#
# Usage: e2e/images/smoke.sh [--address SOCKET]
#   Without --address, a throwaway containerd (own config, root, state and socket under /tmp) is started
#   and stopped again. Run `e2e/images/build.sh all` first.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${GPTOSS_CACHE:-$HOME/.cache/gpt-oss-operator}"
REFS="$CACHE/images/refs.env"
ADDRESS=""
if [[ "${1:-}" == "--address" ]]; then ADDRESS="$2"; fi
[[ -f "$REFS" ]] || { echo "[smoke] ERROR: $REFS is missing: run e2e/images/build.sh all" >&2; exit 1; }
# shellcheck source=/dev/null
source "$REFS"

log() { printf '[smoke %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

WORK="$(mktemp -d /tmp/gptoss-images-smoke.XXXXXX)"
CONTAINERD_PID=""
CONTAINERS=()
cleanup() {
  local name
  for name in "${CONTAINERS[@]}"; do
    ctr_ task kill -s SIGKILL "$name" >/dev/null 2>&1 || true
    wait_stopped "$name" || true
    ctr_ task rm "$name" >/dev/null 2>&1 || true
    ctr_ containers rm "$name" >/dev/null 2>&1 || true
  done
  if [[ -n "$CONTAINERD_PID" ]]; then
    kill "$CONTAINERD_PID" 2>/dev/null || true
    wait "$CONTAINERD_PID" 2>/dev/null || true
    # containerd unmounts its snapshots when the tasks go; anything left under our root is ours to drop.
    grep -o " $WORK/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

if [[ -z "$ADDRESS" ]]; then
  ADDRESS="$WORK/containerd.sock"
  cat >"$WORK/config.toml" <<EOF
version = 2
root = "$WORK/root"
state = "$WORK/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$ADDRESS"
[ttrpc]
  address = "$ADDRESS.ttrpc"
EOF
  containerd --config "$WORK/config.toml" >"$WORK/containerd.log" 2>&1 &
  CONTAINERD_PID=$!
  for _ in $(seq 100); do [[ -S "$ADDRESS" ]] && break; sleep 0.1; done
  [[ -S "$ADDRESS" ]] || { cat "$WORK/containerd.log" >&2; exit 1; }
  log "throwaway containerd (pid $CONTAINERD_PID) at $ADDRESS"
fi

ctr_() { ctr --address "$ADDRESS" --namespace k8s.io "$@"; }
task_status() { ctr_ task ls | awk -v name="$1" '$1 == name {print $3}'; }
wait_stopped() {
  local _
  for _ in $(seq 150); do [[ "$(task_status "$1")" != RUNNING ]] && return 0; sleep 0.2; done
  return 1
}
# restricted --rm|--detach NAME IMAGE ARGS...: a read-only root filesystem, a tmpfs /tmp, the image's user.
restricted() {
  local mode="$1" name="$2" image="$3"; shift 3
  CONTAINERS+=("$name")
  ctr_ run "$mode" --read-only --mount "type=tmpfs,destination=/tmp,options=rw:nosuid:nodev:mode=1777" \
    "$image" "$name" "$@"
}
in_task() { local task="$1"; shift; ctr_ task exec --exec-id "probe-$RANDOM" "$task" "$@"; }

start=$(now)
"$HERE/build.sh" load --address "$ADDRESS"
log "images loaded in $(since "$start")s"

log "pause: $PAUSE_IMAGE"
restricted --detach smoke-pause "$PAUSE_IMAGE"
[[ "$(task_status smoke-pause)" == RUNNING ]] || { log "FAIL: pause is not running"; exit 1; }
ctr_ task kill -s SIGTERM smoke-pause
wait_stopped smoke-pause || { log "FAIL: pause ignored SIGTERM"; exit 1; }
log "pause stops on SIGTERM"

log "operator: $OPERATOR_IMAGE"
restricted --rm smoke-operator "$OPERATOR_IMAGE" gptoss-operator --help | head -3

log "fetcher: ${FETCHER_IMAGE:?refs.env has no FETCHER_IMAGE: run e2e/images/build.sh all}"
restricted --rm smoke-fetcher-help "$FETCHER_IMAGE" gptoss-runtime fetch --help | head -1
restricted --rm smoke-fetcher-import "$FETCHER_IMAGE" python -c 'import gptoss_runtime.fetch'

log "runtime-cpu: $RUNTIME_CPU_IMAGE"
restricted --rm smoke-runtime-help "$RUNTIME_CPU_IMAGE" gptoss-runtime --help | head -3
restricted --rm smoke-runtime-id "$RUNTIME_CPU_IMAGE" id
start=$(now)
restricted --detach smoke-serve "$RUNTIME_CPU_IMAGE" sh -c \
  'gptoss-runtime make-tiny-checkpoint /tmp/tiny && exec gptoss-runtime serve --weights /tmp/tiny --engine reference'
ready=""
for _ in $(seq 240); do
  [[ "$(task_status smoke-serve)" == RUNNING ]] || { log "FAIL: the server exited"; exit 1; }
  if in_task smoke-serve python3 -c 'import sys, urllib.request as u
sys.exit(u.urlopen("http://127.0.0.1:8000/v2/health/ready", timeout=2).status != 200)' 2>/dev/null; then
    ready=yes; break
  fi
  sleep 0.5
done
[[ -n "$ready" ]] || { log "FAIL: /v2/health/ready never answered 200"; exit 1; }
log "tritonserver ready $(since "$start")s after start (tiny checkpoint written first)"
in_task smoke-serve gptoss-runtime gateway --triton-grpc 127.0.0.1:8001 --port 9000 --weights /tmp/tiny \
  >"$WORK/gateway.log" 2>&1 &
in_task smoke-serve python3 - <<'EOF'
import json, time, urllib.request as u
for _ in range(150):
    try:
        u.urlopen("http://127.0.0.1:9000/v1/models", timeout=2)
        break
    except OSError:
        time.sleep(0.2)
body = {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
request = u.Request("http://127.0.0.1:9000/v1/chat/completions", data=json.dumps(body).encode(),
                    headers={"Content-Type": "application/json"})
answer = json.load(u.urlopen(request, timeout=60))
print("[smoke] chat completion:", answer["usage"], repr(answer["choices"][0]["message"]["content"]))
EOF
start=$(now)
ctr_ task kill -s SIGTERM smoke-serve
wait_stopped smoke-serve || { log "FAIL: the server ignored SIGTERM"; exit 1; }
log "server stopped $(since "$start")s after SIGTERM"
log "OK: all images work read-only as non-root"
