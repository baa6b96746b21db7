# shellcheck shell=bash
# Helpers shared by run.sh, failover.sh, reload.sh, tls.sh, probes.sh, limits.sh,
# telegram.sh, discovery.sh and ../soak.sh; sourced, not run. The caller sets
# PROG (the prefix of its messages), ROOT (the repository), ORIGIN_PORTS, PIN and
# KEEP_TMP. Linux only (reads /proc).

die() { echo "$PROG: error: $*" >&2; exit 1; }

# usage: the script's header comment (from line 2 to the first line that is not a
# comment), as --help prints it.
usage() { awk 'NR == 1 {next} /^#/ {sub(/^# ?/, ""); print; next} {exit}' "$0"; }

# help_or_no_args "$@": for scripts that take only --help.
help_or_no_args() {
    while [ $# -gt 0 ]; do
        case $1 in
            -h|--help) usage; exit 0 ;;
            *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
        esac
    done
}
log() { echo "== $*" >&2; }

# ---------------------------------------------------------------- tools, build
# install_missing CMD...: installs with apt-get the package of each CMD that is
# not on PATH (each package has its command's name).
install_missing() {
    local c sudo='' need=()
    for c in "$@"; do command -v "$c" >/dev/null || need+=("$c"); done
    [ ${#need[@]} -gt 0 ] || return 0
    log "installing ${need[*]}"
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    # policy-rc.d or no systemd keeps the packaged services from starting; if
    # they do start they listen on :80, not on our ports.
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
}

require() { # CMD...
    local t
    for t in "$@"; do command -v "$t" >/dev/null || die "$t is required"; done
}

# SWITCHYARD=/path/to/switchyard: measure that binary instead of building the
# tree's (a build made earlier, or on a machine too busy to build during a run).
build_switchyard() {
    if [ -n "${SWITCHYARD:-}" ]; then
        [ -x "$SWITCHYARD" ] || die "SWITCHYARD is not an executable file: $SWITCHYARD"
        log "using $SWITCHYARD (SWITCHYARD set: no build)"
        return
    fi
    log "building switchyard (release)"
    (cd "$ROOT" && cargo build --release --quiet --bin switchyard)
}

# ------------------------------------------------------------- machine state
# check_ports KNOBS PORT...: dies if something already listens on a PORT. KNOBS
# names the variables that move the ports, for the message.
check_ports() {
    local knobs=$1 p; shift
    for p in "$@"; do
        if [ -n "$(ss -Htln "sport = :$p")" ]; then
            ss -Htlnp "sport = :$p" >&2 || true
            die "port $p is busy; free it or set $knobs"
        fi
    done
}

# "busy total" for all CPUs from /proc/stat (user nice system irq softirq steal;
# total adds idle and iowait).
machine_ticks() {
    awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat
}

# warn_if_busy WHEN: samples the CPUs for 1 s and, if they are more than 10%
# busy, warns "... busy before WHEN" and lists the top three processes.
warn_if_busy() {
    local busy0 total0 busy1 total1 busy
    read -r busy0 total0 < <(machine_ticks); sleep 1; read -r busy1 total1 < <(machine_ticks)
    busy=$(( (busy1 - busy0) * 100 / (total1 - total0 > 0 ? total1 - total0 : 1) ))
    if [ "$busy" -gt 10 ]; then
        log "WARNING: the machine is already ${busy}% busy before $1"
        ps -eo pcpu=,pid=,args= --sort=-pcpu | head -n 3 | cut -c1-120 >&2 || true
    fi
}

# ------------------------------------------------------- temp dir, processes
# Every process the script started, in order (STARTED), and those it has not
# yet stopped and reaped (LIVE, keyed by pid). A pid leaves LIVE once it is
# reaped, so the trap never signals a pid that the kernel may have given to
# something else.
STARTED=()
declare -A LIVE=()
track() { STARTED+=("$1"); LIVE[$1]=1; }

# stop PID...: SIGTERM to all, in the order given, then up to 5 s of grace for
# each before SIGKILL; reaps each one.
stop() {
    local pid
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        unset "LIVE[$pid]"
    done
}

# On exit: stops what is still running, newest first, and removes TMP unless
# KEEP_TMP=1 or the script failed.
cleanup() {
    local rc=$? i pids=()
    trap - EXIT INT TERM
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
        [ -z "${LIVE[${STARTED[i]}]:-}" ] || pids+=("${STARTED[i]}")
    done
    [ ${#pids[@]} -eq 0 ] || stop "${pids[@]}"
    if [ "$KEEP_TMP" = 1 ] || [ $rc -ne 0 ]; then
        echo "$PROG: configs and logs kept in $TMP" >&2
    else
        rm -rf "$TMP"
    fi
    exit $rc
}

# make_workdir CSV_NAME: TMP, a fresh /tmp/switchyard-PROG.XXXXXX, and CSV,
# target/compare/CSV_NAME-DATE.csv; from now on the EXIT trap cleans up.
# shellcheck disable=SC2034 # CSV is for the caller
make_workdir() {
    local out_dir=$ROOT/target/compare
    TMP=$(mktemp -d "/tmp/switchyard-$PROG.XXXXXX")
    mkdir -p "$out_dir"
    CSV=$out_dir/$1-$(date +%Y%m%d-%H%M%S).csv
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# copy_switchyard DIR: SY, a copy of the release binary in DIR, so that a
# concurrent `cargo build` cannot swap the binary mid-run.
copy_switchyard() {
    mkdir -p "$1"
    SY=$1/switchyard
    cp "${SWITCHYARD:-$ROOT/target/release/switchyard}" "$SY"
}

# copy_baseline BINARY DIR: SY_BASE, a copy of another build of switchyard (the
# A/B mode of run.sh) in DIR, for the same reason: a build or a checkout in the
# other tree must not change the binary under the run.
# shellcheck disable=SC2034 # SY_BASE is for the caller
copy_baseline() {
    if ! [ -f "$1" ] || ! [ -x "$1" ]; then die "BASELINE is not an executable file: $1"; fi
    mkdir -p "$2"
    SY_BASE=$2/switchyard
    cp "$1" "$SY_BASE"
}

# CPU placement, identical for every proxy: with PIN=1 the origins run on CPU 0
# and wrk on CPU 1. The proxies themselves are never pinned, so each sees both
# CPUs and sizes itself to 2 workers/threads. PIN=0 pins nothing; that is how
# users run a proxy, and so how results are reported (run.sh's default). PIN=1
# takes some scheduling noise out when comparing two code paths.
# shellcheck disable=SC2034 # PIN_ORIGINS and PIN_WRK are for the caller
pin_setup() {
    if [ "$PIN" = 1 ]; then
        PIN_ORIGINS=(taskset -c 0)
        PIN_WRK=(taskset -c 1)
    else
        PIN_ORIGINS=()
        PIN_WRK=()
    fi
}

# wait_port PORT NAME PID LOG: until something listens on PORT (10 s at most).
wait_port() {
    local i
    for i in $(seq 100); do
        [ -n "$(ss -Htln "sport = :$1")" ] && return 0
        kill -0 "$3" 2>/dev/null || die "$2 exited at startup; see $4:
$(tail -n 20 "$4" 2>/dev/null)"
        sleep 0.1
    done
    die "$2 did not listen on port $1 within 10 s; see $4"
}

# start VAR NAME PORT LOG CMD...: runs CMD in the background, output in LOG, its
# pid in VAR (which may be an array element), and waits for PORT. taskset and
# the proxies exec, so the pid is the process's own.
start() {
    local var=$1 name=$2 port=$3 logf=$4; shift 4
    "$@" >"$logf" 2>&1 &
    printf -v "$var" %s $!
    track $!
    wait_port "$port" "$name" "$!" "$logf"
}

# launch NAME PORT CMD...: start, with the pid in PID[NAME] (an associative array
# the caller declares) and the output in TMP/NAME.log.
launch() { start "PID[$1]" "$1" "$2" "$TMP/$1.log" "${@:3}"; }

# start_origins: `$SY origin` on each of ORIGIN_PORTS, as origin1, origin2...,
# on PIN_ORIGINS's CPU (pin_setup) if any.
start_origins() {
    local i=1 p
    log "starting origins on $ORIGIN_PORTS${PIN_ORIGINS:+ (${PIN_ORIGINS[*]})}"
    for p in $ORIGIN_PORTS; do
        launch "origin$i" "$p" ${PIN_ORIGINS[@]+"${PIN_ORIGINS[@]}"} \
            "$SY" origin --listen "127.0.0.1:$p" --name "origin$i"
        i=$((i + 1))
    done
}

# render TEMPLATE OUTPUT DIR PORT [SED_EXPR...]: fills in @DIR@, @PORT@ and
# @ORIGIN_1@... (from ORIGIN_PORTS), and applies any further sed expressions.
render() {
    local tmpl=$1 out=$2 i=1 p args=(-e "s|@DIR@|$3|g" -e "s|@PORT@|$4|g")
    shift 4
    for p in $ORIGIN_PORTS; do args+=(-e "s|@ORIGIN_$i@|127.0.0.1:$p|g"); i=$((i + 1)); done
    for p in "$@"; do args+=(-e "$p"); done
    sed "${args[@]}" "$tmpl" >"$out"
}

# x_origins: the x-origin header values in the response headers on stdin, one a
# line.
x_origins() {
    awk -F': *' 'tolower($1) == "x-origin" {sub(/\r$/, "", $2); print $2}'
}

# ------------------------------------------------------- the proxies of a run
# RUN (an array, from PROXIES) is the proxies of this run, in order; PORT (an
# associative array) has each known proxy's port; BASELINE is another switchyard
# binary or empty.

# has NAME: whether NAME is among the proxies of this run.
has() { [[ " ${RUN[*]} " == *" $1 "* ]]; }

# place_baseline: when BASELINE is set and RUN does not name baseline, adds it
# right after switchyard (at the end without switchyard), so that the two runs
# an A/B compares are the closest in time.
place_baseline() {
    local p order=()
    if [ -z "$BASELINE" ] || has baseline; then return 0; fi
    for p in "${RUN[@]}"; do
        order+=("$p")
        [ "$p" != switchyard ] || order+=(baseline)
    done
    has switchyard || order+=(baseline)
    RUN=("${order[@]}")
}

# check_run KNOWN: dies if RUN is empty, names a proxy without a PORT (KNOWN
# lists them for the message) or one twice, or names baseline without BASELINE.
check_run() {
    local p
    [ ${#RUN[@]} -gt 0 ] || die "PROXIES is empty"
    for p in "${RUN[@]}"; do
        [ -n "${PORT[$p]:-}" ] || die "unknown proxy in PROXIES: $p ($1)"
    done
    [ "$(printf '%s\n' "${RUN[@]}" | sort | uniq -d)" = "" ] || die "a proxy is named twice in PROXIES: ${RUN[*]}"
    ! has baseline || [ -n "$BASELINE" ] || die "PROXIES names baseline but BASELINE (the binary) is not set"
}

# ------------------------------------------------------------ /proc sampling
# with_children PID...: each pid and its children (nginx workers), as of now.
with_children() {
    local p
    for p in "$@"; do
        echo "$p"
        ps -o pid= --ppid "$p" 2>/dev/null || true
    done
}

# ticks_of own|all PIDS: CPU time, in clock ticks, summed over PIDS (a
# whitespace-separated list): utime+stime (fields 14 and 15 of /proc/PID/stat)
# with "own", plus the reaped children's cutime+cstime (16, 17) with "all". The
# process's own line covers all its threads. comm (field 2) may hold spaces, so
# fields are counted after its closing parenthesis: field 14 is the 12th there.
ticks_of() {
    local pid stat total=0 f
    for pid in $2; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        read -r -a f <<<"${stat##*) }"
        total=$((total + f[11] + f[12]))
        [ "$1" = own ] || total=$((total + f[13] + f[14]))
    done
    echo $total
}

# user_sys_ticks PIDS: "USER SYS", utime and stime (fields 14 and 15 of
# /proc/PID/stat) in clock ticks, each summed over PIDS; their sum is
# `ticks_of own`. Kept apart because they answer different questions: user time
# is the proxy's own code (parsing, routing, the runtime), system time is the
# kernel working for it (socket reads and writes, epoll, loopback TCP), which a
# change in how the proxy batches its I/O moves without touching user time.
user_sys_ticks() {
    local pid stat user=0 sys=0 f
    for pid in $1; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        read -r -a f <<<"${stat##*) }"
        user=$((user + f[11]))
        sys=$((sys + f[12]))
    done
    echo "$user $sys"
}

# to_us 1.23ms → 1230: a wrk latency in microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        f = (u == "us") ? 1 : (u == "ms") ? 1e3 : (u == "s") ? 1e6 : (u == "m") ? 6e7 : -1
        if (f < 0) { print "NaN"; exit }
        printf "%.0f", n * f }'
}
