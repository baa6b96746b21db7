#!/usr/bin/env bash
# End-to-end comparison of Switchyard, nginx and HAProxy behind the same three
# sample origins, driven by wrk in interleaved rounds. Not run by CI; see
# README.md next to this file. Linux only (reads /proc); run as root or with
# sudo when nginx/haproxy/wrk still need installing.
#
#   benches/compare/run.sh                           # /ping, 3 rounds
#   SCENARIO='/?bytes=65536' benches/compare/run.sh  # 64 KiB bodies
#   benches/compare/run.sh --scenario '/?bytes=65536'
#   OBSERVE=1 benches/compare/run.sh                 # also Switchyard with metrics
#                                                    # and a JSON access log on
#
# Knobs (environment): THREADS CONNECTIONS DURATION WARMUP ROUNDS SCENARIO PIN
# SY_PORT NGINX_PORT HAPROXY_PORT OBSERVE SY_OBS_PORT ORIGIN_PORTS KEEP_TMP.
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
OBSERVE=${OBSERVE:-0}          # 1: add "observed", Switchyard with metrics + access log
SY_OBS_PORT=${SY_OBS_PORT:-18083} # its admin listener is this port + 1000
ORIGIN_PORTS=${ORIGIN_PORTS:-"19101 19102 19103"}
KEEP_TMP=${KEEP_TMP:-0}        # 1: keep the temp dir (configs, logs, wrk output)

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PROG=compare
# shellcheck source=benches/compare/common.sh
. "$HERE/common.sh"
while [ $# -gt 0 ]; do
    case $1 in
        --scenario) SCENARIO=${2:?--scenario needs a path}; shift 2 ;;
        --scenario=*) SCENARIO=${1#*=}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
case $SCENARIO in /*) ;; *) echo "SCENARIO must start with /: $SCENARIO" >&2; exit 2 ;; esac

PROXIES=(switchyard nginx haproxy)
declare -A PORT=([switchyard]=$SY_PORT [nginx]=$NGINX_PORT [haproxy]=$HAPROXY_PORT)
if [ "$OBSERVE" = 1 ]; then
    PROXIES+=(observed)
    PORT[observed]=$SY_OBS_PORT
fi
declare -A PID=()
read -r -a ORIGINS <<<"$ORIGIN_PORTS"

# ---------------------------------------------------------------- tools, build
install_missing nginx haproxy wrk
require taskset ss curl getconf
build_switchyard

# --------------------------------------------------------------- ports, tmpdir
check_ports SY_PORT/NGINX_PORT/HAPROXY_PORT/ORIGIN_PORTS "${PORT[@]}" "${ORIGINS[@]}"

# Anything else using the CPUs skews all three proxies, not necessarily alike.
warn_if_busy "the benchmark starts; results will be noisy"

make_workdir results
FAILED=0
copy_switchyard "$TMP"
pin_setup

# launch NAME PORT CMD...: start, with the pid in PID[NAME] and the output in
# TMP/NAME.log.
launch() { start "PID[$1]" "$1" "$2" "$TMP/$1.log" "${@:3}"; }

# ------------------------------------------------------------------- origins
log "starting origins on $ORIGIN_PORTS${PIN_ORIGINS:+ (${PIN_ORIGINS[*]})}"
i=1
for p in $ORIGIN_PORTS; do
    launch "origin$i" "$p" ${PIN_ORIGINS[@]+"${PIN_ORIGINS[@]}"} \
        "$SY" origin --listen "127.0.0.1:$p" --name "origin$i"
    i=$((i + 1))
done

# ------------------------------------------------------------------- proxies
log "starting switchyard :$SY_PORT, nginx :$NGINX_PORT, haproxy :$HAPROXY_PORT"
render "$HERE/switchyard.toml.tmpl" "$TMP/switchyard.toml" "$TMP" "$SY_PORT"
"$SY" check --config "$TMP/switchyard.toml" >/dev/null
RUST_LOG=warn launch switchyard "$SY_PORT" "$SY" run --config "$TMP/switchyard.toml"
if [ "$OBSERVE" = 1 ]; then
    # The same configuration with metrics (an admin listener) and a JSON access log.
    render "$HERE/switchyard.toml.tmpl" "$TMP/observed.toml" "$TMP" "$SY_OBS_PORT"
    printf '\n[admin]\nlisten = "127.0.0.1:%d"\n\n[access_log]\npath = "%s"\nformat = "json"\n' \
        $((SY_OBS_PORT + 1000)) "$TMP/access.log" >>"$TMP/observed.toml"
    "$SY" check --config "$TMP/observed.toml" >/dev/null
    RUST_LOG=warn launch observed "$SY_OBS_PORT" "$SY" run --config "$TMP/observed.toml"
fi

mkdir -p "$TMP/nginx"
render "$HERE/nginx.conf.tmpl" "$TMP/nginx/nginx.conf" "$TMP/nginx" "$NGINX_PORT"
nginx -t -q -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" \
    || die "nginx rejected $TMP/nginx/nginx.conf"
launch nginx "$NGINX_PORT" nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log"

render "$HERE/haproxy.cfg.tmpl" "$TMP/haproxy.cfg" "$TMP" "$HAPROXY_PORT"
haproxy -c -q -f "$TMP/haproxy.cfg" || die "haproxy rejected $TMP/haproxy.cfg"
# -db: foreground, no master process; the pid we hold is the one doing the work.
launch haproxy "$HAPROXY_PORT" haproxy -db -f "$TMP/haproxy.cfg"

# ------------------------------------------------------------ /proc sampling
CLK_TCK=$(getconf CLK_TCK)

# The proxy's pid and its children (nginx workers); as of now.
proxy_pids() { with_children "${PID[$1]}"; }

# utime+stime of the proxy's processes (ticks_of in common.sh).
cpu_ticks() { ticks_of own "$(proxy_pids "$1")"; }

# For the "others" column: CPU used during a run by anything this script did not
# start. Everything started here (origins, proxies, nginx workers):
all_pids() { with_children "${STARTED[@]}"; }
# wrk's CPU, once it has exited: cutime+cstime (fields 16, 17) of this shell.
reaped_ticks() {
    local stat f
    stat=$(cat "/proc/$$/stat")
    read -r -a f <<<"${stat##*) }"
    echo $((f[13] + f[14]))
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
    origins=$(x_origins <<<"$heads" | tr '\n' ' ')
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
        before=$(cpu_ticks "$name"); all0=$(ticks_of own "$(all_pids)"); wrk0=$(reaped_ticks)
        read -r busy0 total0 < <(machine_ticks)
        run_wrk "$name" "$DURATION" "$out"
        read -r busy1 total1 < <(machine_ticks)
        after=$(cpu_ticks "$name"); all1=$(ticks_of own "$(all_pids)"); wrk1=$(reaped_ticks)
        # Clamped at 0: tick rounding can make the difference slightly negative.
        others=$(( (busy1 - busy0) - (all1 - all0) - (wrk1 - wrk0) ))
        others_pct=$(( (others > 0 ? others : 0) * 100 / (total1 - total0) ))
        rss=$(rss_kib "$name")

        requests=$(awk '/requests in/ {print $1; exit}' "$out")
        rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
        p50=$(to_us "$(awk '$1 == "50%" {print $2}' "$out")")
        p99=$(to_us "$(awk '$1 == "99%" {print $2}' "$out")")
        if ! { [ -n "$requests" ] && [ -n "$rps" ] && [ "$requests" -gt 0 ]; }; then
            cat "$out" >&2
            die "could not parse wrk output for $name"
        fi
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
        if ("observed" in rps)
            printf "metrics + access log on / off: %.3f × req/s, %.3f × CPU per request\n", rps["observed"] / rps["switchyard"], cpu["observed"] / cpu["switchyard"]
    }' "$CSV"
echo "raw results: ${CSV#"$ROOT"/}"
if [ "$OBSERVE" = 1 ]; then
    lines=$(wc -l <"$TMP/access.log")
    served=$(curl -sS "http://127.0.0.1:$((SY_OBS_PORT + 1000))/metrics" \
        | awk '/^switchyard_requests_total/ {n += $NF} END {print n + 0}')
    echo "observed: $lines access-log lines, switchyard_requests_total = $served"
fi

[ "$FAILED" = 0 ] || die "some runs had non-2xx responses or socket errors (listed above)"
