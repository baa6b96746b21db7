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
# A/B of two builds (e.g. before and after a change): BASELINE adds "baseline",
# that binary with the same configuration, to the same interleaved rounds, and
# the table ends with switchyard / baseline ratios. PROXIES can leave nginx and
# HAProxy out, for more rounds in the same time:
#   BASELINE=/path/to/old/switchyard benches/compare/run.sh
#   BASELINE=/path/to/old/switchyard PROXIES="switchyard baseline" ROUNDS=10 \
#       benches/compare/run.sh
#
# CPU per request is reported as user + system, and as each of the two.
# Nothing is pinned by default (PIN=0), as users run a proxy; PIN=1 puts the
# origins on CPU 0 and wrk on CPU 1, which can take some noise out of an A/B of
# two code paths, but is not how results are reported.
#
# Knobs (environment): PROXIES THREADS CONNECTIONS DURATION WARMUP ROUNDS
# SCENARIO PIN SY_PORT NGINX_PORT HAPROXY_PORT OBSERVE SY_OBS_PORT BASELINE
# SY_BASE_PORT ORIGIN_PORTS KEEP_TMP SY_APPEND IDLE TUNNELS SY_WS_PORT.
#
# At the end, IDLE keep-alive client connections are held open on each proxy
# (one request each, then quiet) and the growth of its RSS per connection is
# printed; TUNNELS idle WebSocket tunnels through Switchyard, the same per tunnel.
set -euo pipefail

# Measured in this order each round; also "baseline" and "observed", which
# BASELINE and OBSERVE=1 add when they are not named here.
PROXIES=${PROXIES:-"switchyard nginx haproxy"}
THREADS=${THREADS:-1}          # wrk threads: 1, the 2 cores are needed elsewhere
CONNECTIONS=${CONNECTIONS:-50} # wrk connections
DURATION=${DURATION:-10s}      # one measured run
WARMUP=${WARMUP:-3s}           # one unmeasured run per proxy before round 1
ROUNDS=${ROUNDS:-3}            # each round runs every proxy once, in order
SCENARIO=${SCENARIO:-/ping}    # the path (and query) wrk requests
PIN=${PIN:-0}                  # 0: nothing pinned; 1: origins on CPU 0, wrk on CPU 1
SY_PORT=${SY_PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18081}
HAPROXY_PORT=${HAPROXY_PORT:-18082}
OBSERVE=${OBSERVE:-0}          # 1: add "observed", Switchyard with metrics + access log
SY_OBS_PORT=${SY_OBS_PORT:-18083} # its admin listener is this port + 1000
BASELINE=${BASELINE:-}         # another switchyard binary: add "baseline" (A/B)
SY_BASE_PORT=${SY_BASE_PORT:-18084}
ORIGIN_PORTS=${ORIGIN_PORTS:-"19101 19102 19103"}
KEEP_TMP=${KEEP_TMP:-0}        # 1: keep the temp dir (configs, logs, wrk output)
SY_APPEND=${SY_APPEND:-}       # TOML appended to switchyard's and baseline's configs (printf %b)
IDLE=${IDLE:-9500}             # idle keep-alive client connections held per proxy at the end; 0: skip
TUNNELS=${TUNNELS:-1000}       # idle WebSocket tunnels through Switchyard at the end; 0: skip
SY_WS_PORT=${SY_WS_PORT:-18085} # the Switchyard that carries them, and its upgrade origin on +1

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

declare -A PORT=([switchyard]=$SY_PORT [nginx]=$NGINX_PORT [haproxy]=$HAPROXY_PORT
    [observed]=$SY_OBS_PORT [baseline]=$SY_BASE_PORT)
read -r -a RUN <<<"$PROXIES"
# BASELINE and OBSERVE add their proxy when PROXIES does not name it: baseline
# right after switchyard (place_baseline), so that the two runs an A/B compares
# are the closest in time in every round, and observed at the end, as before.
place_baseline
[ "$OBSERVE" != 1 ] || has observed || RUN+=(observed)
check_run "switchyard, nginx, haproxy, baseline, observed"
# Checked here too (copy_baseline does), so that a typo fails before the build.
if [ -n "$BASELINE" ] && { ! [ -f "$BASELINE" ] || ! [ -x "$BASELINE" ]; }; then
    die "BASELINE is not an executable file: $BASELINE"
fi
PROXIES=("${RUN[@]}")
declare -A PID=()
read -r -a ORIGINS <<<"$ORIGIN_PORTS"

# ---------------------------------------------------------------- tools, build
tools=()
for p in nginx haproxy; do if has "$p"; then tools+=("$p"); fi; done
install_missing ${tools[@]+"${tools[@]}"} wrk
require taskset ss curl getconf
# The origins are the release binary's `switchyard origin`, so it is built even
# when switchyard itself is not measured.
build_switchyard

# --------------------------------------------------------------- ports, tmpdir
ports=()
for p in "${PROXIES[@]}"; do ports+=("${PORT[$p]}"); done
check_ports SY_PORT/NGINX_PORT/HAPROXY_PORT/SY_OBS_PORT/SY_BASE_PORT/ORIGIN_PORTS "${ports[@]}" "${ORIGINS[@]}"

# Anything else using the CPUs skews all three proxies, not necessarily alike.
warn_if_busy "the benchmark starts; results will be noisy"

make_workdir results
FAILED=0
copy_switchyard "$TMP"
if has baseline; then
    # In TMP/baseline/, not next to the copy of the current build.
    copy_baseline "$BASELINE" "$TMP/baseline"
    # What was compared, for the title of the table: the tree's commit (the
    # script builds it) and the baseline's path, each with its binary's hash.
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    [ -z "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ] || rev+=+dirty
    AB_TITLE="A/B: switchyard = $rev (sha256 $(sha256sum <"$SY" | cut -c1-12)), baseline = $BASELINE (sha256 $(sha256sum <"$SY_BASE" | cut -c1-12))"
    log "$AB_TITLE"
    # Not an error: an A/A run (the same binary twice) shows the noise level.
    ! cmp -s "$SY" "$SY_BASE" || log "NOTE: baseline is the same binary as switchyard (an A/A run: the ratios show the noise)"
fi
pin_setup

# ------------------------------------------------------------------- origins
# The idle phase holds IDLE sockets in the client and as many in each proxy.
if [ "$IDLE" -gt 0 ] || [ "$TUNNELS" -gt 0 ]; then
    want=$(( (IDLE > TUNNELS * 2 ? IDLE : TUNNELS * 2) + 1024 ))
    # As much room as the hard limit allows (raised where we may).
    ulimit -Hn 65536 2>/dev/null || true
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    [ "$(ulimit -n)" -ge "$want" ] || die "IDLE=$IDLE / TUNNELS=$TUNNELS need $want open files; ulimit -n allows $(ulimit -n)"
    require python3
fi
start_origins

# ------------------------------------------------------------------- proxies
log "starting$(for p in "${PROXIES[@]}"; do printf ' %s :%s' "$p" "${PORT[$p]}"; done)"
if has switchyard; then
    render "$HERE/switchyard.toml.tmpl" "$TMP/switchyard.toml" "$TMP" "$SY_PORT"
    printf '%b' "$SY_APPEND" >>"$TMP/switchyard.toml"
    "$SY" check --config "$TMP/switchyard.toml" >/dev/null
    RUST_LOG=warn launch switchyard "$SY_PORT" "$SY" run --config "$TMP/switchyard.toml"
fi
if has baseline; then
    # The same template as switchyard's, only the port differs. The baseline's
    # own `check` must accept it: a schema change between the two builds shows
    # here rather than as a proxy that fails to start.
    mkdir -p "$TMP/baseline"
    render "$HERE/switchyard.toml.tmpl" "$TMP/baseline/switchyard.toml" "$TMP/baseline" "$SY_BASE_PORT"
    printf '%b' "$SY_APPEND" >>"$TMP/baseline/switchyard.toml"
    "$SY_BASE" check --config "$TMP/baseline/switchyard.toml" >/dev/null \
        || die "the baseline binary rejected $TMP/baseline/switchyard.toml"
    RUST_LOG=warn launch baseline "$SY_BASE_PORT" "$SY_BASE" run --config "$TMP/baseline/switchyard.toml"
fi
if has observed; then
    # The same configuration with metrics (an admin listener) and a JSON access log.
    render "$HERE/switchyard.toml.tmpl" "$TMP/observed.toml" "$TMP" "$SY_OBS_PORT"
    printf '\n[admin]\nlisten = "127.0.0.1:%d"\n\n[access_log]\npath = "%s"\nformat = "json"\n' \
        $((SY_OBS_PORT + 1000)) "$TMP/access.log" >>"$TMP/observed.toml"
    "$SY" check --config "$TMP/observed.toml" >/dev/null
    RUST_LOG=warn launch observed "$SY_OBS_PORT" "$SY" run --config "$TMP/observed.toml"
fi

if has nginx; then
    mkdir -p "$TMP/nginx"
    render "$HERE/nginx.conf.tmpl" "$TMP/nginx/nginx.conf" "$TMP/nginx" "$NGINX_PORT"
    nginx -t -q -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" \
        || die "nginx rejected $TMP/nginx/nginx.conf"
    launch nginx "$NGINX_PORT" nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log"
fi

if has haproxy; then
    render "$HERE/haproxy.cfg.tmpl" "$TMP/haproxy.cfg" "$TMP" "$HAPROXY_PORT"
    haproxy -c -q -f "$TMP/haproxy.cfg" || die "haproxy rejected $TMP/haproxy.cfg"
    # -db: foreground, no master process; the pid we hold is the one doing the work.
    launch haproxy "$HAPROXY_PORT" haproxy -db -f "$TMP/haproxy.cfg"
fi

# ------------------------------------------------------------ /proc sampling
CLK_TCK=$(getconf CLK_TCK)

# The proxy's pid and its children (nginx workers); as of now.
proxy_pids() { with_children "${PID[$1]}"; }

# "USER SYS": utime and stime of the proxy's processes (user_sys_ticks in
# common.sh).
cpu_ticks() { user_sys_ticks "$(proxy_pids "$1")"; }

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

# per_req TICKS REQUESTS: microseconds of CPU per request.
per_req() { awk -v t="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN {printf "%.2f", t * 1e6 / hz / n}'; }

log "warm-up: $WARMUP per proxy"
for name in "${PROXIES[@]}"; do
    run_wrk "$name" "$WARMUP" "$TMP/warmup-$name.txt"
    err=$(wrk_errors "$TMP/warmup-$name.txt")
    [ -z "$err" ] || { echo "  $name warm-up: $err" >&2; FAILED=1; }
done

# cpu_* is user + system, as before; the user_* and sys_* columns come last so
# that the earlier columns keep their positions in older CSVs.
echo "round,proxy,scenario,threads,connections,duration,requests,rps,p50_us,p99_us,cpu_ticks,cpu_us_per_req,rss_kib,others_cpu_pct,non2xx,socket_errors,user_ticks,sys_ticks,user_us_per_req,sys_us_per_req" >"$CSV"
log "measuring: $ROUNDS rounds × ${PROXIES[*]}, wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency $SCENARIO"
for round in $(seq "$ROUNDS"); do
    for name in "${PROXIES[@]}"; do
        out=$TMP/round$round-$name.txt
        read -r user0 sys0 < <(cpu_ticks "$name"); all0=$(ticks_of own "$(all_pids)"); wrk0=$(reaped_ticks)
        read -r busy0 total0 < <(machine_ticks)
        run_wrk "$name" "$DURATION" "$out"
        read -r busy1 total1 < <(machine_ticks)
        read -r user1 sys1 < <(cpu_ticks "$name"); all1=$(ticks_of own "$(all_pids)"); wrk1=$(reaped_ticks)
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
        user=$((user1 - user0)); sys=$((sys1 - sys0)); ticks=$((user + sys))
        cpu_per_req=$(per_req "$ticks" "$requests")
        user_per_req=$(per_req "$user" "$requests"); sys_per_req=$(per_req "$sys" "$requests")
        non2xx=$(awk -F': *' '/Non-2xx/ {print $2}' "$out")
        sockerr=$(sed -n 's/^ *Socket errors: //p' "$out" | tr -d ',')
        echo "$round,$name,$SCENARIO,$THREADS,$CONNECTIONS,$DURATION,$requests,$rps,$p50,$p99,$ticks,$cpu_per_req,$rss,$others_pct,${non2xx:-0},$sockerr,$user,$sys,$user_per_req,$sys_per_req" >>"$CSV"
        printf '  round %d %-10s %8.0f req/s  p50 %5d us  p99 %6d us  cpu %6.2f us/req (user %6.2f sys %6.2f)  rss %5.1f MiB  others %2d%%\n' \
            "$round" "$name" "$rps" "$p50" "$p99" "$cpu_per_req" "$user_per_req" "$sys_per_req" \
            "$(awk -v k="$rss" 'BEGIN {print k / 1024}')" "$others_pct" >&2
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
[ -z "${AB_TITLE:-}" ] || echo "$AB_TITLE"
# Medians per proxy over the rounds, and ratios: against nginx when it ran (CPU
# is user + system there), and switchyard / baseline in an A/B run, both the
# ratio of the medians and the spread of the ratios of the two runs of each
# round (they ran one after the other, so drift mostly cancels in each pair).
awk -F, -v order="${PROXIES[*]}" '
    function median(key,    n, i, j, t, a) {
        n = split(vals[key], a, " ")
        for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    # ab LABEL KEY: one line of the A/B table; "-" where a denominator is 0
    # (a short run can have no system tick at all).
    function ab(label, key,    r, lo, hi, x, n) {
        printf "  %-24s", label
        if (med["baseline", key] > 0) printf " %10.3f", med["switchyard", key] / med["baseline", key]
        else printf " %10s", "-"
        n = 0
        for (r in rounds) {
            if (!((r, "switchyard", key) in at) || !((r, "baseline", key) in at) || at[r, "baseline", key] <= 0) continue
            x = at[r, "switchyard", key] / at[r, "baseline", key]
            if (n == 0 || x < lo) lo = x
            if (n == 0 || x > hi) hi = x
            n++
        }
        if (n > 0) printf "   %.3f..%.3f (%d of %d rounds)\n", lo, hi, n, length(rounds)
        else printf "   -\n"
    }
    # The CSV columns of the values in the table, by key.
    BEGIN { split("rps 8 p50 9 p99 10 cpu 12 rss 13 user 19 sys 20", col, " ") }
    NR > 1 {
        rounds[$1] = 1
        for (k = 1; k < 14; k += 2) {
            vals[$2, col[k]] = vals[$2, col[k]] " " $col[k + 1]
            at[$1, $2, col[k]] = $col[k + 1]
        }
        if ($15 + 0 > 0 || $16 ~ /[1-9]/) bad[$2] = 1
        if ($14 + 0 > maxo) maxo = $14 + 0
    }
    END {
        n = split(order, names, " ")
        split("rps p50 p99 cpu rss user sys", keys, " ")
        for (i = 1; i <= n; i++) {
            ran[names[i]] = 1
            for (k in keys) med[names[i], keys[k]] = median(names[i] SUBSEP keys[k])
        }
        ng = ("nginx" in ran) && med["nginx", "rps"] > 0 && med["nginx", "cpu"] > 0 && med["nginx", "p99"] > 0
        printf "%-11s %10s %8s %8s %11s %12s %11s %8s", "proxy", "req/s", "p50 us", "p99 us", "CPU us/req", "user us/req", "sys us/req", "RSS MiB"
        if (ng) printf " %12s %12s %10s", "req/s/nginx", "CPU/nginx", "p99/nginx"
        printf "\n"
        for (i = 1; i <= n; i++) {
            p = names[i]
            printf "%-11s %10.0f %8.0f %8.0f %11.2f %12.2f %11.2f %8.1f", p, med[p, "rps"], med[p, "p50"], med[p, "p99"],
                med[p, "cpu"], med[p, "user"], med[p, "sys"], med[p, "rss"] / 1024
            if (ng) printf " %12.2f %12.2f %10.2f", med[p, "rps"] / med["nginx", "rps"], med[p, "cpu"] / med["nginx", "cpu"], med[p, "p99"] / med["nginx", "p99"]
            printf "%s\n", (p in bad) ? "  ERRORS (see above)" : ""
        }
        printf "CPU used by other processes during a run: at most %d%% of the machine%s\n", maxo, (maxo > 5) ? " (noisy: rerun on a quiet machine)" : ""
        if (("observed" in ran) && ("switchyard" in ran))
            printf "metrics + access log on / off: %.3f × req/s, %.3f × CPU per request\n", med["observed", "rps"] / med["switchyard", "rps"], med["observed", "cpu"] / med["switchyard", "cpu"]
        if (("baseline" in ran) && ("switchyard" in ran)) {
            printf "\n%-26s %10s   %s\n", "switchyard / baseline", "of medians", "per round, min..max"
            ab("req/s", "rps")
            ab("CPU us/req (user+sys)", "cpu")
            ab("user CPU us/req", "user")
            ab("sys CPU us/req", "sys")
            ab("p99", "p99")
        }
    }' "$CSV"
echo "raw results: ${CSV#"$ROOT"/}"

# ------------------------------------------------------------ idle connections
# hold PORT N [ARGS...]: starts idle_conns.py holding N connections, on fd 3
# (its stdin, kept open) and fd 4 (its "ready" line); waits until they are up.
hold() {
    local port=$1 n=$2 line
    shift 2
    coproc HOLD { python3 "$HERE/idle_conns.py" "$port" "$n" "$@" 2>"$TMP/idle.err"; }
    read -r line <&"${HOLD[0]}" || { cat "$TMP/idle.err" >&2; die "idle_conns.py against :$port failed"; }
    [ "$line" = "ready $n" ] || die "idle_conns.py against :$port: $line"
}
release() {
    local pid=$HOLD_PID
    eval "exec ${HOLD[1]}>&-"
    wait "$pid" 2>/dev/null || true
}
# settle: RSS once connections have been quiet for a while (Switchyard parks an
# idle HTTP/1.1 connection after 100 ms; give every proxy the same 2 s).
settle() { sleep 2; rss_kib "$1"; }

if [ "$IDLE" -gt 0 ]; then
    echo
    echo "Idle keep-alive client connections: $IDLE per proxy, one GET $SCENARIO each, then quiet"
    printf '%-11s %12s %12s %14s\n' proxy "RSS MiB" "+ idle MiB" "bytes/conn"
    for name in "${PROXIES[@]}"; do
        before=$(settle "$name")
        hold "${PORT[$name]}" "$IDLE" "$SCENARIO"
        after=$(settle "$name")
        release
        printf '%-11s %12.1f %12.1f %14.0f\n' "$name" "$(awk -v k="$before" 'BEGIN {print k / 1024}')" \
            "$(awk -v a="$after" -v b="$before" 'BEGIN {print (a - b) / 1024}')" \
            "$(awk -v a="$after" -v b="$before" -v n="$IDLE" 'BEGIN {print (a - b) * 1024 / n}')"
    done
fi
if [ "$TUNNELS" -gt 0 ]; then
    # A Switchyard of its own, routing to an origin that answers every request
    # with 101 and then holds the socket: each client connection becomes a
    # tunnel, with one origin connection behind it.
    start "WS_ORIGIN" ws-origin $((SY_WS_PORT + 1)) "$TMP/ws-origin.log" \
        python3 "$HERE/idle_conns.py" --upgrade-origin $((SY_WS_PORT + 1))
    printf '[[listener]]\nname = "ws"\nlisten = "127.0.0.1:%d"\n\n[[route]]\npath = "/"\nupstream = "ws"\n\n[upstream.ws]\nservers = [{ addr = "127.0.0.1:%d" }]\n' \
        "$SY_WS_PORT" $((SY_WS_PORT + 1)) >"$TMP/ws.toml"
    "$SY" check --config "$TMP/ws.toml" >/dev/null
    RUST_LOG=warn launch tunnels "$SY_WS_PORT" "$SY" run --config "$TMP/ws.toml"
    PORT[tunnels]=$SY_WS_PORT
    before=$(settle tunnels)
    hold "$SY_WS_PORT" "$TUNNELS" /ws --upgrade
    after=$(settle tunnels)
    release
    echo
    printf 'Idle WebSocket tunnels through Switchyard: %d, RSS +%.1f MiB, %.0f bytes per tunnel (client and origin socket)\n' \
        "$TUNNELS" "$(awk -v a="$after" -v b="$before" 'BEGIN {print (a - b) / 1024}')" \
        "$(awk -v a="$after" -v b="$before" -v n="$TUNNELS" 'BEGIN {print (a - b) * 1024 / n}')"
fi
if has observed; then
    lines=$(wc -l <"$TMP/access.log")
    served=$(curl -sS "http://127.0.0.1:$((SY_OBS_PORT + 1000))/metrics" \
        | awk '/^switchyard_requests_total/ {n += $NF} END {print n + 0}')
    echo "observed: $lines access-log lines, switchyard_requests_total = $served"
fi

[ "$FAILED" = 0 ] || die "some runs had non-2xx responses or socket errors (listed above)"
