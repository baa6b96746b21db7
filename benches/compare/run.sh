#!/usr/bin/env bash
# End-to-end comparison of Switchyard, nginx and HAProxy behind the same three
# sample origins, driven by wrk in interleaved rounds. Not run by CI; see
# README.md next to this file. Linux only (reads /proc); run as root or with
# sudo when nginx/haproxy/wrk still need installing.
#
#   benches/compare/run.sh                           # /ping, 3 rounds
#   SCENARIO='/?bytes=65536' benches/compare/run.sh  # 64 KiB bodies
#   benches/compare/run.sh --scenario '/?bytes=65536'
#
# Knobs (environment): THREADS CONNECTIONS DURATION WARMUP ROUNDS SCENARIO PIN
# SY_PORT NGINX_PORT HAPROXY_PORT ORIGIN_PORTS KEEP_TMP.
set -euo pipefail

THREADS=${THREADS:-1}          # wrk threads: 1, the 2 cores are needed elsewhere
CONNECTIONS=${CONNECTIONS:-50} # wrk connections
DURATION=${DURATION:-10s}      # one measured run
WARMUP=${WARMUP:-3s}           # one unmeasured run per proxy before round 1
ROUNDS=${ROUNDS:-3}            # each round runs every proxy once, in order
SCENARIO=${SCENARIO:-/ping}    # the path (and query) wrk requests
PIN=${PIN:-1}                  # 1: origins on CPU 0, wrk on CPU 1, proxies free
SY_PORT=${SY_PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18081}
HAPROXY_PORT=${HAPROXY_PORT:-18082}
ORIGIN_PORTS=${ORIGIN_PORTS:-"19101 19102 19103"}
KEEP_TMP=${KEEP_TMP:-0}        # 1: keep the temp dir (configs, logs, wrk output)

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case $1 in
        --scenario) SCENARIO=${2:?--scenario needs a path}; shift 2 ;;
        --scenario=*) SCENARIO=${1#*=}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
case $SCENARIO in /*) ;; *) echo "SCENARIO must start with /: $SCENARIO" >&2; exit 2 ;; esac

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PROXIES=(switchyard nginx haproxy)
declare -A PORT=([switchyard]=$SY_PORT [nginx]=$NGINX_PORT [haproxy]=$HAPROXY_PORT)
declare -A PID=()
STARTED=() # every pid this script started, killed in reverse order on exit

die() { echo "compare: error: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }

# ---------------------------------------------------------------- tools, build
need=()
command -v nginx >/dev/null || need+=(nginx)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    # policy-rc.d or no systemd keeps the packaged services from starting; if
    # they do start they listen on :80, not on our ports.
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
for t in taskset ss curl getconf; do command -v $t >/dev/null || die "$t is required"; done

log "building switchyard (release)"
(cd "$ROOT" && cargo build --release --quiet --bin switchyard)

# --------------------------------------------------------------- ports, tmpdir
for p in "${PORT[@]}" $ORIGIN_PORTS; do
    if [ -n "$(ss -Htln "sport = :$p")" ]; then
        ss -Htlnp "sport = :$p" >&2 || true
        die "port $p is busy; free it or set SY_PORT/NGINX_PORT/HAPROXY_PORT/ORIGIN_PORTS"
    fi
done

# Anything else using the CPUs skews all three proxies, not necessarily alike.
cpu_line() { awk '/^cpu / {idle = $5 + $6; t = 0; for (i = 2; i <= 9; i++) t += $i; print t, idle}' /proc/stat; }
read -r t0 i0 < <(cpu_line); sleep 1; read -r t1 i1 < <(cpu_line)
BUSY=$(( (t1 - t0 - (i1 - i0)) * 100 / (t1 - t0 > 0 ? t1 - t0 : 1) ))
if [ "$BUSY" -gt 10 ]; then
    log "WARNING: the machine is already ${BUSY}% busy before the benchmark starts; results will be noisy"
    ps -eo pcpu=,pid=,args= --sort=-pcpu | head -n 3 | cut -c1-120 >&2 || true
fi

TMP=$(mktemp -d /tmp/switchyard-compare.XXXXXX)
OUT_DIR=$ROOT/target/compare
mkdir -p "$OUT_DIR"
CSV=$OUT_DIR/results-$(date +%Y%m%d-%H%M%S).csv
FAILED=0

cleanup() {
    local rc=$? i pid
    trap - EXIT INT TERM
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
        kill -TERM "${STARTED[i]}" 2>/dev/null || true
    done
    for pid in "${STARTED[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "$KEEP_TMP" = 1 ] || [ $rc -ne 0 ]; then
        echo "compare: configs and logs kept in $TMP" >&2
    else
        rm -rf "$TMP"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A copy, so a concurrent `cargo build` cannot swap the binary mid-run.
SY=$TMP/switchyard
cp "$ROOT/target/release/switchyard" "$SY"

# CPU placement, identical for every proxy. The proxies themselves are never
# pinned, so each sees both CPUs and sizes itself to 2 workers/threads.
if [ "$PIN" = 1 ]; then
    PIN_ORIGINS=(taskset -c 0)
    PIN_WRK=(taskset -c 1)
else
    PIN_ORIGINS=()
    PIN_WRK=()
fi

wait_port() { # port name pid
    local i
    for i in $(seq 100); do
        [ -n "$(ss -Htln "sport = :$1")" ] && return 0
        kill -0 "$3" 2>/dev/null || die "$2 exited at startup; see $TMP/$2.log:
$(tail -n 20 "$TMP/$2.log" 2>/dev/null)"
        sleep 0.1
    done
    die "$2 did not listen on port $1 within 10 s; see $TMP/$2.log"
}

# start NAME PORT CMD...: runs CMD in the background with its output in a log.
# taskset and exec keep the pid the process's own pid.
start() {
    local name=$1 port=$2; shift 2
    "$@" >"$TMP/$name.log" 2>&1 &
    PID[$name]=$!
    STARTED+=($!)
    wait_port "$port" "$name" "${PID[$name]}"
}

render() { # template output
    local i=1 p args=(-e "s|@DIR@|$3|g" -e "s|@PORT@|$4|g")
    for p in $ORIGIN_PORTS; do args+=(-e "s|@ORIGIN_$i@|127.0.0.1:$p|g"); i=$((i + 1)); done
    sed "${args[@]}" "$1" >"$2"
}

# ------------------------------------------------------------------- origins
log "starting origins on $ORIGIN_PORTS${PIN_ORIGINS:+ (${PIN_ORIGINS[*]})}"
i=1
for p in $ORIGIN_PORTS; do
    start "origin$i" "$p" ${PIN_ORIGINS[@]+"${PIN_ORIGINS[@]}"} \
        "$SY" origin --listen "127.0.0.1:$p" --name "origin$i"
    i=$((i + 1))
done

# ------------------------------------------------------------------- proxies
log "starting switchyard :$SY_PORT, nginx :$NGINX_PORT, haproxy :$HAPROXY_PORT"
render "$HERE/switchyard.toml.tmpl" "$TMP/switchyard.toml" "$TMP" "$SY_PORT"
"$SY" check --config "$TMP/switchyard.toml" >/dev/null
RUST_LOG=warn start switchyard "$SY_PORT" "$SY" run --config "$TMP/switchyard.toml"

mkdir -p "$TMP/nginx"
render "$HERE/nginx.conf.tmpl" "$TMP/nginx/nginx.conf" "$TMP/nginx" "$NGINX_PORT"
nginx -t -q -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" \
    || die "nginx rejected $TMP/nginx/nginx.conf"
start nginx "$NGINX_PORT" nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log"

render "$HERE/haproxy.cfg.tmpl" "$TMP/haproxy.cfg" "$TMP" "$HAPROXY_PORT"
haproxy -c -q -f "$TMP/haproxy.cfg" || die "haproxy rejected $TMP/haproxy.cfg"
# -db: foreground, no master process; the pid we hold is the one doing the work.
start haproxy "$HAPROXY_PORT" haproxy -db -f "$TMP/haproxy.cfg"

# ------------------------------------------------------------ /proc sampling
CLK_TCK=$(getconf CLK_TCK)

# The proxy's pid and its children (nginx workers); as of now.
proxy_pids() {
    local root=${PID[$1]}
    echo "$root"
    ps -o pid= --ppid "$root" 2>/dev/null || true
}

# utime+stime (fields 14 and 15 of /proc/PID/stat, clock ticks), summed over
# the pids given. The process's own line covers all its threads. comm (field 2)
# may hold spaces, so fields are counted after its closing parenthesis: field 14
# is the 12th there.
ticks_of() {
    local pid stat total=0 f
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        read -r -a f <<<"${stat##*) }"
        total=$((total + f[11] + f[12]))
    done
    echo $total
}
cpu_ticks() { ticks_of $(proxy_pids "$1"); }

# For the "others" column: CPU used during a run by anything this script did not
# start. Everything started here (origins, proxies, nginx workers):
all_pids() {
    local p
    for p in "${STARTED[@]}"; do
        echo "$p"
        ps -o pid= --ppid "$p" 2>/dev/null || true
    done
}
# wrk's CPU, once it has exited: cutime+cstime (fields 16, 17) of this shell.
reaped_ticks() {
    local stat f
    stat=$(cat "/proc/$$/stat")
    read -r -a f <<<"${stat##*) }"
    echo $((f[13] + f[14]))
}
# "busy total" for all CPUs from /proc/stat (user nice system irq softirq steal).
machine_ticks() {
    awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat
}

rss_kib() {
    local pid total=0 v
    for pid in $(proxy_pids "$1"); do
        v=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || continue
        total=$((total + ${v:-0}))
    done
    echo $total
}

# ------------------------------------------------------------- sanity checks
log "checking round-robin and status on $SCENARIO (3 requests on one connection each)"
for name in "${PROXIES[@]}"; do
    url="http://127.0.0.1:${PORT[$name]}$SCENARIO"
    # One curl, three URLs: one keep-alive connection, so nginx's per-worker
    # round-robin state is seen from a single worker.
    heads=$(curl -sS -g -D - -o /dev/null "$url" -o /dev/null "$url" -o /dev/null "$url") \
        || die "$name: curl $url failed"
    codes=$(awk '/^HTTP\// {print $2}' <<<"$heads" | tr '\n' ' ')
    origins=$(awk -F': *' 'tolower($1) == "x-origin" {sub(/\r$/, "", $2); print $2}' <<<"$heads" | tr '\n' ' ')
    printf '  %-10s status: %s x-origin: %s\n' "$name" "$codes" "$origins" >&2
    [ "$codes" = "200 200 200 " ] || die "$name: expected three 200s, got: $codes"
    distinct=$(tr ' ' '\n' <<<"$origins" | sed '/^$/d' | sort -u | wc -l)
    [ "$distinct" -eq 3 ] || die "$name does not rotate over the three origins: $origins"
done
log "headers the origin received (GET /)"
for name in "${PROXIES[@]}"; do
    got=$(curl -sS "http://127.0.0.1:${PORT[$name]}/" | grep -iE '^(host|x-[a-z-]+):' | sort | tr '\n' ';')
    printf '  %-10s %s\n' "$name" "$got" >&2
done

# ------------------------------------------------------------------ wrk runs
# wrk NAME DURATION OUTFILE
run_wrk() {
    ${PIN_WRK[@]+"${PIN_WRK[@]}"} wrk -t"$THREADS" -c"$CONNECTIONS" -d"$2" --latency \
        "http://127.0.0.1:${PORT[$1]}$SCENARIO" >"$3" 2>&1 || {
        cat "$3" >&2
        die "wrk against $1 failed"
    }
}

# Latency as wrk prints it (850.00us, 1.20ms, 2.00s) → whole microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        f = (u == "us") ? 1 : (u == "ms") ? 1e3 : (u == "s") ? 1e6 : (u == "m") ? 6e7 : -1
        if (f < 0) { print "NaN"; exit }
        printf "%.0f", n * f }'
}

# errors OUTFILE → "" or a description of non-2xx responses / socket errors.
wrk_errors() {
    grep -E 'Non-2xx|Socket errors' "$1" | sed 's/^ *//' | tr '\n' ';' || true
}

log "warm-up: $WARMUP per proxy"
for name in "${PROXIES[@]}"; do
    run_wrk "$name" "$WARMUP" "$TMP/warmup-$name.txt"
    err=$(wrk_errors "$TMP/warmup-$name.txt")
    [ -z "$err" ] || { echo "  $name warm-up: $err" >&2; FAILED=1; }
done

echo "round,proxy,scenario,threads,connections,duration,requests,rps,p50_us,p99_us,cpu_ticks,cpu_us_per_req,rss_kib,others_cpu_pct,non2xx,socket_errors" >"$CSV"
log "measuring: $ROUNDS rounds × ${PROXIES[*]}, wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency $SCENARIO"
for round in $(seq "$ROUNDS"); do
    for name in "${PROXIES[@]}"; do
        out=$TMP/round$round-$name.txt
        before=$(cpu_ticks "$name"); all0=$(ticks_of $(all_pids)); wrk0=$(reaped_ticks)
        read -r busy0 total0 < <(machine_ticks)
        run_wrk "$name" "$DURATION" "$out"
        read -r busy1 total1 < <(machine_ticks)
        after=$(cpu_ticks "$name"); all1=$(ticks_of $(all_pids)); wrk1=$(reaped_ticks)
        # Clamped at 0: tick rounding can make the difference slightly negative.
        others=$(( (busy1 - busy0) - (all1 - all0) - (wrk1 - wrk0) ))
        others_pct=$(( (others > 0 ? others : 0) * 100 / (total1 - total0) ))
        rss=$(rss_kib "$name")

        requests=$(awk '/requests in/ {print $1; exit}' "$out")
        rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
        p50=$(to_us "$(awk '$1 == "50%" {print $2}' "$out")")
        p99=$(to_us "$(awk '$1 == "99%" {print $2}' "$out")")
        [ -n "$requests" ] && [ -n "$rps" ] && [ "$requests" -gt 0 ] || {
            cat "$out" >&2
            die "could not parse wrk output for $name"
        }
        ticks=$((after - before))
        cpu_per_req=$(awk -v t="$ticks" -v hz="$CLK_TCK" -v n="$requests" 'BEGIN {printf "%.2f", t * 1e6 / hz / n}')
        non2xx=$(awk -F': *' '/Non-2xx/ {print $2}' "$out")
        sockerr=$(sed -n 's/^ *Socket errors: //p' "$out" | tr -d ',')
        echo "$round,$name,$SCENARIO,$THREADS,$CONNECTIONS,$DURATION,$requests,$rps,$p50,$p99,$ticks,$cpu_per_req,$rss,$others_pct,${non2xx:-0},$sockerr" >>"$CSV"
        printf '  round %d %-10s %8.0f req/s  p50 %5d us  p99 %6d us  cpu %6.2f us/req  rss %5.1f MiB  others %2d%%\n' \
            "$round" "$name" "$rps" "$p50" "$p99" "$cpu_per_req" "$(awk -v k="$rss" 'BEGIN {print k / 1024}')" "$others_pct" >&2
        err=$(wrk_errors "$out")
        if [ -n "$err" ]; then
            echo "  !! $name round $round: $err" >&2
            FAILED=1
        fi
    done
done

# --------------------------------------------------------------------- table
echo
echo "Scenario $SCENARIO — wrk -t$THREADS -c$CONNECTIONS -d$DURATION, median of $ROUNDS interleaved rounds, $(nproc) CPUs, PIN=$PIN"
awk -F, -v order="${PROXIES[*]}" '
    function median(key,    n, i, j, t, a) {
        n = split(vals[key], a, " ")
        for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    NR > 1 {
        vals[$2, "rps"] = vals[$2, "rps"] " " $8
        vals[$2, "p50"] = vals[$2, "p50"] " " $9
        vals[$2, "p99"] = vals[$2, "p99"] " " $10
        vals[$2, "cpu"] = vals[$2, "cpu"] " " $12
        vals[$2, "rss"] = vals[$2, "rss"] " " $13
        if ($15 + 0 > 0 || $16 ~ /[1-9]/) bad[$2] = 1
        if ($14 + 0 > maxo) maxo = $14 + 0
    }
    END {
        n = split(order, names, " ")
        for (i = 1; i <= n; i++) {
            p = names[i]
            rps[p] = median(p SUBSEP "rps"); p50[p] = median(p SUBSEP "p50")
            p99[p] = median(p SUBSEP "p99"); cpu[p] = median(p SUBSEP "cpu")
            rss[p] = median(p SUBSEP "rss") / 1024
        }
        printf "%-11s %10s %8s %8s %11s %8s %12s %12s %10s\n", "proxy", "req/s", "p50 us", "p99 us", "CPU us/req", "RSS MiB", "req/s/nginx", "CPU/nginx", "p99/nginx"
        for (i = 1; i <= n; i++) {
            p = names[i]
            printf "%-11s %10.0f %8.0f %8.0f %11.2f %8.1f %12.2f %12.2f %10.2f%s\n", p, rps[p], p50[p], p99[p], cpu[p], rss[p],
                rps[p] / rps["nginx"], cpu[p] / cpu["nginx"], p99[p] / p99["nginx"], (p in bad) ? "  ERRORS (see above)" : ""
        }
        printf "CPU used by other processes during a run: at most %d%% of the machine%s\n", maxo, (maxo > 5) ? " (noisy: rerun on a quiet machine)" : ""
    }' "$CSV"
echo "raw results: ${CSV#"$ROOT"/}"

[ "$FAILED" = 0 ] || die "some runs had non-2xx responses or socket errors (listed above)"
