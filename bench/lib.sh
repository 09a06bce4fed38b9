# lib.sh - what the benchmark scripts (run.sh, pg2pc.sh, amqp.sh,
# restart.sh, callgrind.sh, cpu_ab.sh) share; sourced, never run. They set
# PIDS=() and add every process they start to it; PROBE_WRITES is theirs too.
# shellcheck shell=bash

log() { echo "== $*" >&2; }

# require_built HOW FILE...: stop with "<script>: FILE not found: build it
# with HOW" unless every FILE is an executable.
require_built() {
    local how=$1 f
    shift
    for f in "$@"; do
        if [ ! -x "$f" ]; then
            echo "$(basename "$0"): $f not found: build it with $how" >&2
            exit 1
        fi
    done
}

# Kill every process in PIDS and wait for them (in a script's EXIT trap).
stop_pids() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}

# A free TCP port on 127.0.0.1 (bind to port 0 and read the answer).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Value of key=... in a RESULT line.
field() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; }

# "ext4 on /dev/vda": the filesystem a path is on.
fs_of() { df --output=fstype,source "$1" | tail -1 | awk '{ print $1 " on " $2 }'; }

# CPU ticks (user + system) a process has used so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }

# The machine: CPU_MODEL, NPROC, KERNEL, MEM, LOAD0 (for the sourcing script).
# shellcheck disable=SC2034
machine_facts() {
    CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    NPROC=$(nproc)
    KERNEL=$(uname -r)
    MEM=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
    LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
}

# sync_probe FILE [dd options]: PROBE_WRITES 4 KiB writes to FILE with
# O_DSYNC (each durable before the next, like write + fdatasync); on a new
# file they append (the size changes, so metadata is journaled too), with
# conv=notrunc on an existing one they overwrite. Prints "N/s (M ms each)".
sync_probe() {
    local file=$1 out
    shift
    out=$(dd if=/dev/zero of="$file" bs=4k count="$PROBE_WRITES" oflag=dsync "$@" 2>&1 | tail -1)
    awk -v n="$PROBE_WRITES" '{ for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^s,?$/) s = $i }
        END { if (s > 0) printf "%.0f/s (%.2f ms each)", n / s, s * 1000 / n; else print "?" }' <<<"$out"
}
