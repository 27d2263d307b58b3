# Shared by the probe scripts (POSIX sh, no Python: a probe runs every few
# seconds and Kubernetes enforces a 1 s timeout by default).
# The probe folder: first argument, else LLM_ENTRY_PROBE_DIR, else /etc/probe.
probe_dir=${1:-${LLM_ENTRY_PROBE_DIR:-/etc/probe}}

# The monitor writes into `heartbeat` the Unix time until which it vouches for
# the other files, and 0 once llm-entry has exited. Missing, unreadable, 0 or
# past: the files cannot be trusted. Every failure says why on stderr.
heartbeat_fresh() {
    [ -r "$probe_dir/heartbeat" ] || { echo "no heartbeat in $probe_dir: llm-entry is not running" >&2; return 1; }
    until=
    read -r until < "$probe_dir/heartbeat" || :
    case $until in
        '') echo "heartbeat in $probe_dir is empty (llm-entry never writes it so): is another process writing there?" >&2
            return 1 ;;
        0) printf 'llm-entry has exited: ' >&2
           cat "$probe_dir/not-ready" >&2 2>/dev/null || echo "nothing runs here any more" >&2
           return 1 ;;
        *[!0-9]*) echo "heartbeat in $probe_dir is not a Unix time: is another process writing there?" >&2
            return 1 ;;
    esac
    now=$(date +%s)
    [ "$now" -le "$until" ] || { echo "heartbeat stale by $((now - until)) s: llm-entry's monitor is stuck or gone" >&2; return 1; }
}

present() {
    # Print the reason the file holds, for `kubectl describe pod`.
    [ -e "$probe_dir/$1" ] || return 1
    printf '%s: ' "$1" >&2; cat "$probe_dir/$1" >&2 2>/dev/null || echo >&2
    return 0
}
