# Shared by the probe scripts (POSIX sh, no Python: a probe runs every few
# seconds and Kubernetes enforces a 1 s timeout by default).
# The probe folder: first argument, else LLM_ENTRY_PROBE_DIR, else /etc/probe.
probe_dir=${1:-${LLM_ENTRY_PROBE_DIR:-/etc/probe}}

# The monitor writes into `heartbeat` the Unix time until which it vouches for
# the other files. Missing, unreadable or past: the files cannot be trusted.
heartbeat_fresh() {
    [ -r "$probe_dir/heartbeat" ] || { echo "no heartbeat in $probe_dir: llm-entry is not running" >&2; return 1; }
    until=
    read -r until < "$probe_dir/heartbeat" || [ -n "$until" ] || return 1
    now=$(date +%s)
    case $until in ''|*[!0-9]*) echo "heartbeat unreadable" >&2; return 1 ;; esac
    [ "$now" -le "$until" ] || { echo "heartbeat stale by $((now - until)) s: llm-entry's monitor is stuck or gone" >&2; return 1; }
}

present() {
    # Print the reason the file holds, for `kubectl describe pod`.
    [ -e "$probe_dir/$1" ] || return 1
    printf '%s: ' "$1" >&2; cat "$probe_dir/$1" >&2 2>/dev/null || echo >&2
    return 0
}
