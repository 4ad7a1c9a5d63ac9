# shellcheck shell=bash
# Host processes of the pipeline, tracked by pid files (sourced by up.sh and down.sh; needs RUN_DIR,
# LOG_DIR, log and die). A pid counts as ours only while /proc/PID/exe is the binary we started and its
# command line names NAME (every NAME is part of its binary's or script's path), so a reused pid is never
# signalled.

# process_alive NAME BINARY: the process in NAME's pid file runs BINARY.
process_alive() {
  local name="$1" binary="$2" pid
  [[ -s "$RUN_DIR/$name.pid" ]] || return 1
  pid=$(cat "$RUN_DIR/$name.pid")
  [[ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" == "$(readlink -f "$binary")" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "${name//-/[-_]}"
}

# stop_process NAME BINARY: SIGTERM, then SIGKILL after 15 s; removes the pid file.
stop_process() {
  local name="$1" binary="$2" pid waited=0
  if process_alive "$name" "$binary"; then
    pid=$(cat "$RUN_DIR/$name.pid")
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    while process_alive "$name" "$binary" && ((waited < 150)); do sleep 0.1; waited=$((waited + 1)); done
    if process_alive "$name" "$binary"; then kill -KILL "$pid" 2>/dev/null || true; fi
    while process_alive "$name" "$binary"; do sleep 0.1; done
  fi
  rm -f "$RUN_DIR/$name.pid" "$RUN_DIR/$name.inputs"
}

# ensure_process NAME BINARY INPUT_FILE... -- ARGS...: keep NAME running BINARY ARGS; restart it when the
# binary, the arguments or the content of an input file changed since it was started.
ensure_process() {
  local name="$1" binary="$2"; shift 2
  local inputs=()
  while [[ "$1" != "--" ]]; do inputs+=("$1"); shift; done
  shift
  local digest
  digest=$( { printf '%s\n' "$(readlink -f "$binary")" "$@"; cat "${inputs[@]}"; } | sha256sum | cut -d' ' -f1)
  if process_alive "$name" "$binary" && [[ "$(cat "$RUN_DIR/$name.inputs" 2>/dev/null)" == "$digest" ]]; then
    log "$name already running (pid $(cat "$RUN_DIR/$name.pid")), inputs unchanged"
    return
  fi
  stop_process "$name" "$binary"
  log "starting $name (log: $LOG_DIR/$name.log)"
  printf '\n=== %s start %s\n' "$name" "$(date -u +%FT%TZ)" >>"$LOG_DIR/$name.log"
  # Its own session, no inherited lock descriptors: it outlives this script, and a later up.sh must not
  # wait on a lock the process holds.
  setsid "$binary" "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null 8>&- 9>&- &
  echo $! >"$RUN_DIR/$name.pid"
  echo "$digest" >"$RUN_DIR/$name.inputs"
}

# wait_for DESCRIPTION NAME COMMAND...: poll COMMAND until it succeeds; fail at once if NAME died, or
# after READY_TIMEOUT_S, with the end of its log.
wait_for() {
  local description="$1" name="$2"; shift 2
  local deadline=$((SECONDS + READY_TIMEOUT_S)) pid
  pid=$(cat "$RUN_DIR/$name.pid")
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$LOG_DIR/$name.log" >&2
      die "$name exited before it was ready; its log: $LOG_DIR/$name.log"
    fi
    if ((SECONDS > deadline)); then
      tail -n 30 "$LOG_DIR/$name.log" >&2
      die "$name not ready after ${READY_TIMEOUT_S}s; its log: $LOG_DIR/$name.log"
    fi
    sleep 0.5
  done
  log "$description"
}
