#!/usr/bin/env bash
# Failover under load. The same timeline runs against Switchyard, nginx
# (max_fails, proxy_next_upstream) and HAProxy (httpchk, retries, redispatch),
# one proxy at a time. Each proxy gets three fresh origins. wrk runs against the
# proxy, and KILL_AT seconds in, one origin is killed with SIGKILL, so its
# in-flight and pooled connections are reset. With RESTART=1 it comes back
# RESTART_AFTER seconds later. The script prints each proxy's failed client
# requests: wrk's socket errors plus its non-2xx/3xx responses. The goal for
# Switchyard is zero. See README.md next to this file. Linux only; run as root
# or with sudo when nginx/haproxy/wrk still need installing.
#
#   benches/compare/failover.sh
#   DURATION=20s KILL_AT=5 RESTART_AFTER=5 benches/compare/failover.sh
#   PROXIES="nginx haproxy" benches/compare/failover.sh
#
# Knobs (environment): PROXIES THREADS CONNECTIONS DURATION SCENARIO KILL KILL_AT
# RESTART RESTART_AFTER RECOVERY_WAIT PIN BUILD SY_PORT NGINX_PORT HAPROXY_PORT
# HAPROXY_STATS_PORT ORIGIN_PORTS KEEP_TMP.
set -euo pipefail
export LC_ALL=C # the decimal point in $EPOCHREALTIME and awk's output

PROXIES=${PROXIES:-"switchyard nginx haproxy"} # which proxies run, in this order
THREADS=${THREADS:-1}            # wrk threads
CONNECTIONS=${CONNECTIONS:-50}   # wrk connections
DURATION=${DURATION:-10s}        # the wrk run for each proxy
SCENARIO=${SCENARIO:-/ping}      # the path wrk requests
KILL=${KILL:-2}                  # which origin is killed: 1, 2 or 3
KILL_AT=${KILL_AT:-3}            # seconds after wrk starts
RESTART=${RESTART:-1}            # 1: start the killed origin again (same port)
RESTART_AFTER=${RESTART_AFTER:-3} # seconds after the kill
RECOVERY_WAIT=${RECOVERY_WAIT:-20} # how long (s) to wait for traffic to reach the restarted origin
PIN=${PIN:-1}                    # 1: origins on CPU 0, wrk on CPU 1, proxies free
BUILD=${BUILD:-1}                # 0: use target/release/switchyard as it is
SY_PORT=${SY_PORT:-18090}
NGINX_PORT=${NGINX_PORT:-18091}
HAPROXY_PORT=${HAPROXY_PORT:-18092}
HAPROXY_STATS_PORT=${HAPROXY_STATS_PORT:-18093}
ORIGIN_PORTS=${ORIGIN_PORTS:-"19111 19112 19113"}
KEEP_TMP=${KEEP_TMP:-0}          # 1: keep the temp dir (configs, logs, wrk output)

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PROG=failover
# shellcheck source=benches/compare/common.sh
. "$HERE/common.sh"
help_or_no_args "$@"
read -r -a ORIGINS <<<"$ORIGIN_PORTS"
read -r -a RUN <<<"$PROXIES"
declare -A PORT=([switchyard]=$SY_PORT [nginx]=$NGINX_PORT [haproxy]=$HAPROXY_PORT)

# ------------------------------------------------------------------ arguments
case $SCENARIO in /*) ;; *) die "SCENARIO must start with /: $SCENARIO" ;; esac
[ ${#ORIGINS[@]} -eq 3 ] || die "ORIGIN_PORTS needs three ports: $ORIGIN_PORTS"
[ ${#RUN[@]} -gt 0 ] || die "PROXIES is empty"
for p in "${RUN[@]}"; do
    [ -n "${PORT[$p]:-}" ] || die "unknown proxy in PROXIES: $p (switchyard, nginx, haproxy)"
done
case $KILL in 1|2|3) ;; *) die "KILL must be 1, 2 or 3: $KILL" ;; esac
case $RESTART in 0|1) ;; *) die "RESTART must be 0 or 1: $RESTART" ;; esac
is_num() { [[ $1 =~ ^[0-9]+([.][0-9]+)?$ ]]; }
for v in KILL_AT RESTART_AFTER RECOVERY_WAIT; do
    is_num "${!v}" || die "$v must be a number of seconds: ${!v}"
done
# wrk's duration syntax (10, 10s, 2m, 1h) → seconds.
DURATION_S=$(awk -v d="$DURATION" 'BEGIN {
    n = d + 0; u = d; sub(/^[0-9.]+/, "", u)
    f = (u == "" || u == "s") ? 1 : (u == "m") ? 60 : (u == "h") ? 3600 : -1
    if (f < 0 || n <= 0) print ""; else print n * f }')
[ -n "$DURATION_S" ] || die "DURATION must look like 10s, 2m or 1h: $DURATION"
LAST_EVENT=$(awk -v k="$KILL_AT" -v r="$RESTART" -v a="$RESTART_AFTER" 'BEGIN {print k + (r == 1 ? a : 0)}')
awk -v e="$LAST_EVENT" -v d="$DURATION_S" 'BEGIN {exit !(e + 1 <= d)}' ||
    die "KILL_AT + RESTART_AFTER = ${LAST_EVENT}s must be at least 1 s before wrk ends (DURATION=$DURATION)"

# ---------------------------------------------------------------- tools, build
tools=()
for p in "${RUN[@]}"; do
    case $p in nginx|haproxy) tools+=("$p") ;; esac
done
install_missing ${tools[@]+"${tools[@]}"} wrk
require taskset ss curl

# The origins are the release binary's `switchyard origin`, so it is needed even
# when Switchyard itself is not in PROXIES.
[ "$BUILD" != 1 ] || build_switchyard
[ -x "$ROOT/target/release/switchyard" ] || die "no $ROOT/target/release/switchyard; run with BUILD=1"

# --------------------------------------------------------------- ports, tmpdir
ALL_PORTS=("${ORIGINS[@]}")
for p in "${RUN[@]}"; do ALL_PORTS+=("${PORT[$p]}"); done
[[ " ${RUN[*]} " == *" haproxy "* ]] && ALL_PORTS+=("$HAPROXY_STATS_PORT")
check_ports SY_PORT/NGINX_PORT/HAPROXY_PORT/HAPROXY_STATS_PORT/ORIGIN_PORTS "${ALL_PORTS[@]}"

# Other work on the machine lowers req/s (not the failure counts); say so.
warn_if_busy "the run starts; req/s will be low and noisy"

make_workdir failover
# Not TMP/switchyard: that is the directory of the switchyard run.
copy_switchyard "$TMP/bin"
pin_setup

# since T: seconds from $EPOCHREALTIME value T until now, to 0.1 s.
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}'; }
sleep_until() { # absolute $EPOCHREALTIME
    local d
    d=$(awk -v t="$1" -v n="$EPOCHREALTIME" 'BEGIN {d = t - n; printf "%.3f", (d > 0 ? d : 0)}')
    sleep "$d"
}

# x-origin values of N requests to URL on one connection (several lines).
origins_of() { # url n
    local args=() i
    for i in $(seq "$2"); do args+=(-o /dev/null "$1"); done
    curl -sS -g -m 2 -D - "${args[@]}" 2>/dev/null | x_origins || true
}

# probe_recovery URL NAME SINCE OUT: writes to OUT how many seconds after SINCE a
# client request was first answered by origin NAME, or "-" if none was within
# RECOVERY_WAIT. Polls with 6 requests on one connection every 0.1 s: with
# round-robin over three servers that reaches every eligible one.
probe_recovery() {
    local deadline got
    deadline=$(awk -v s="$3" -v w="$RECOVERY_WAIT" 'BEGIN {printf "%.6f", s + w}')
    while awk -v n="$EPOCHREALTIME" -v d="$deadline" 'BEGIN {exit !(n < d)}'; do
        got=$(origins_of "$1" 6)
        if grep -qx "$2" <<<"$got"; then
            since "$3" >"$4"
            return 0
        fi
        sleep 0.1
    done
    echo - >"$4"
}

# "N" from wrk's "  Non-2xx or 3xx responses: N" (0 if absent) and the four
# numbers of "  Socket errors: connect A, read B, write C, timeout D".
wrk_counts() { # file → "requests rps non2xx connect read write timeout"
    awk '
        /requests in/ { req = $1 }
        /^Requests\/sec:/ { rps = $2 }
        /Non-2xx or 3xx responses:/ { non = $NF }
        /Socket errors:/ { gsub(/,/, ""); c = $4; r = $6; w = $8; t = $10 }
        END { printf "%s %s %d %d %d %d %d\n", req, rps, non, c, r, w, t }' "$1"
}

# ---------------------------------------------- CPU used by other processes
# As in run.sh: the machine's busy ticks during the wrk run minus those of
# everything this script started. utime+stime+cutime+cstime (fields 14-17 of
# /proc/PID/stat) of this shell, every live pid and its children; processes
# reaped meanwhile (wrk, the killed origin, curl, awk) land in the cutime of
# this shell or of the probe subshell.
own_ticks() { ticks_of all "$$ $(with_children "${!LIVE[@]}")"; }

# ------------------------------------------------------------- one proxy run
KILLED=origin$KILL
KILLED_PORT=${ORIGINS[KILL - 1]}
declare -A RESULT=()

run_one() {
    local name=$1 port=${PORT[$1]} dir=$TMP/$1 i p pid_proxy pid_wrk url got distinct
    local -a opids=()
    mkdir -p "$dir"
    url="http://127.0.0.1:$port$SCENARIO"

    log "$name: starting origins on ${ORIGINS[*]} and $name on :$port"
    for i in 1 2 3; do
        p=${ORIGINS[i - 1]}
        start "opids[$i]" "origin$i" "$p" "$dir/origin$i.log" \
            ${PIN_ORIGINS[@]+"${PIN_ORIGINS[@]}"} "$SY" origin --listen "127.0.0.1:$p" --name "origin$i"
    done

    case $name in
        switchyard)
            render "$HERE/failover-switchyard.toml.tmpl" "$dir/switchyard.toml" "$dir" "$port"
            "$SY" check --config "$dir/switchyard.toml" >"$dir/check.log" 2>&1 ||
                die "switchyard rejected $dir/switchyard.toml:
$(cat "$dir/check.log")"
            # info: the health checker's up/down lines.
            RUST_LOG=${RUST_LOG:-info} start pid_proxy switchyard "$port" "$dir/switchyard.log" \
                "$SY" run --config "$dir/switchyard.toml"
            ;;
        nginx)
            render "$HERE/failover-nginx.conf.tmpl" "$dir/nginx.conf" "$dir" "$port"
            nginx -t -q -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" ||
                die "nginx rejected $dir/nginx.conf"
            start pid_proxy nginx "$port" "$dir/nginx.log" \
                nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
            ;;
        haproxy)
            render "$HERE/failover-haproxy.cfg.tmpl" "$dir/haproxy.cfg" "$dir" "$port" \
                "s|@STATS_PORT@|$HAPROXY_STATS_PORT|g"
            haproxy -c -q -f "$dir/haproxy.cfg" || die "haproxy rejected $dir/haproxy.cfg"
            start pid_proxy haproxy "$port" "$dir/haproxy.log" haproxy -db -f "$dir/haproxy.cfg"
            ;;
    esac

    # All three origins must take traffic before the run (5 s at most, so that
    # a first round of health checks can pass).
    for i in $(seq 50); do
        got=$(origins_of "$url" 3)
        distinct=$(sort -u <<<"$got" | sed '/^$/d' | wc -l)
        [ "$distinct" -eq 3 ] && break
        sleep 0.1
    done
    [ "$distinct" -eq 3 ] || die "$name does not rotate over the three origins: $(tr '\n' ' ' <<<"$got")"

    # ---- the timeline: wrk, kill at +KILL_AT, restart RESTART_AFTER later.
    local t0 t_kill t_restart busy0 total0 own0 busy1 total1 own1 others
    read -r busy0 total0 < <(machine_ticks)
    own0=$(own_ticks)
    t0=$EPOCHREALTIME
    ${PIN_WRK[@]+"${PIN_WRK[@]}"} wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" "$url" >"$dir/wrk.txt" 2>&1 &
    pid_wrk=$!
    track "$pid_wrk"

    sleep_until "$(awk -v a="$t0" -v k="$KILL_AT" 'BEGIN {printf "%.6f", a + k}')"
    t_kill=$EPOCHREALTIME
    kill -KILL "${opids[KILL]}"
    wait "${opids[KILL]}" 2>/dev/null || true
    unset "LIVE[${opids[KILL]}]"
    local dead=${opids[KILL]}
    unset "opids[KILL]" # reaped: never signal that pid again
    log "$name: +$(since "$t0")s killed $KILLED (SIGKILL, pid $dead)"

    local pid_probe=
    if [ "$RESTART" = 1 ]; then
        sleep_until "$(awk -v a="$t_kill" -v r="$RESTART_AFTER" 'BEGIN {printf "%.6f", a + r}')"
        t_restart=$EPOCHREALTIME
        start "opids[$KILL]" "$KILLED" "$KILLED_PORT" "$dir/$KILLED-restarted.log" \
            ${PIN_ORIGINS[@]+"${PIN_ORIGINS[@]}"} "$SY" origin --listen "127.0.0.1:$KILLED_PORT" --name "$KILLED"
        log "$name: +$(since "$t0")s restarted $KILLED (listening after $(since "$t_restart")s)"
        probe_recovery "http://127.0.0.1:$port/ping" "$KILLED" "$t_restart" "$dir/recovery" &
        pid_probe=$!
        track "$pid_probe"
    fi

    local rc=0
    wait "$pid_wrk" || rc=$?
    unset "LIVE[$pid_wrk]"
    read -r busy1 total1 < <(machine_ticks)
    own1=$(own_ticks)
    others=$(( (busy1 - busy0) - (own1 - own0) ))
    others=$(( (others > 0 ? others : 0) * 100 / (total1 - total0 > 0 ? total1 - total0 : 1) ))
    [ $rc -eq 0 ] || { cat "$dir/wrk.txt" >&2; die "wrk against $name failed (exit $rc)"; }

    local back=-
    if [ -n "$pid_probe" ]; then
        wait "$pid_probe" || true
        unset "LIVE[$pid_probe]"
        back=$(cat "$dir/recovery" 2>/dev/null || echo -)
        if [ "$back" = - ]; then
            log "$name: no request reached the restarted $KILLED within ${RECOVERY_WAIT}s of its restart"
            back=">$RECOVERY_WAIT"
        else
            log "$name: the restarted $KILLED answered a client request $back s after its restart"
        fi
    fi

    local req rps non c r w t failed
    read -r req rps non c r w t < <(wrk_counts "$dir/wrk.txt")
    if [ -z "$req" ] || [ -z "$rps" ] || [ "$req" -eq 0 ]; then
        cat "$dir/wrk.txt" >&2
        die "could not parse wrk output for $name"
    fi
    failed=$((non + c + r + w + t))
    RESULT[$name]="$req $rps $non $c $r $w $t $failed $back $others"
    [ -s "$CSV" ] || echo "proxy,threads,connections,duration,scenario,killed,kill_at_s,restart,restart_after_s,requests,rps,non2xx,sock_connect,sock_read,sock_write,sock_timeout,failed,back_after_restart_s,others_cpu_pct" >"$CSV"
    echo "$name,$THREADS,$CONNECTIONS,$DURATION,$SCENARIO,$KILLED,$KILL_AT,$RESTART,$RESTART_AFTER,$req,$rps,$non,$c,$r,$w,$t,$failed,$back,$others" >>"$CSV"
    log "$name: $req requests, $rps req/s, non-2xx $non, socket errors connect $c read $r write $w timeout $t; others used ${others}% of the CPUs"

    details "$name" "$dir"
    stop "$pid_proxy" "${opids[@]}"
}

# What each proxy itself says about the dead origin.
details() {
    local name=$1 dir=$2
    case $name in
        switchyard)
            # State changes and errors, with ANSI colours stripped.
            sed 's/\x1b\[[0-9;]*m//g' "$dir/switchyard.log" |
                grep -E "WARN|ERROR|$KILLED_PORT" | head -n 12 | cut -c1-200 | sed 's/^/     /' >&2 || true
            ;;
        nginx)
            local n
            n=$(grep -c "$KILLED_PORT" "$dir/error.log" 2>/dev/null || true)
            echo "     error.log: ${n:-0} lines about :$KILLED_PORT; distinct messages:" >&2
            grep "$KILLED_PORT" "$dir/error.log" 2>/dev/null |
                sed -E 's/^[0-9\/]+ [0-9:]+ \[[a-z]+\] [0-9#]+: \*?[0-9]* ?//; s/, client: .*//' |
                sort | uniq -c | sort -rn | head -n 6 | cut -c1-200 | sed 's/^/     /' >&2 || true
            ;;
        haproxy)
            # The stats frontend is gone once haproxy stops; read it now.
            curl -sS -m 2 "http://127.0.0.1:$HAPROXY_STATS_PORT/stats;csv" >"$dir/stats.csv" 2>/dev/null || true
            awk -F, 'NR == 1 {for (i = 1; i <= NF; i++) col[$i] = i; next}
                $1 == "origins" {
                    printf "     %-8s status %-5s econ %-4s eresp %-4s wretr %-4s wredis %-4s chkdown %s\n", $2,
                        $col["status"], $col["econ"], $col["eresp"], $col["wretr"], $col["wredis"], $col["chkdown"]
                }' "$dir/stats.csv" >&2 || true
            grep -F "origins/o$KILL " "$dir/haproxy.log" | head -n 6 | cut -c1-200 | sed 's/^/     /' >&2 || true
            ;;
    esac
}

# ------------------------------------------------------------------ the runs
for name in "${RUN[@]}"; do
    run_one "$name"
done

# --------------------------------------------------------------------- table
timeline="$KILLED killed (SIGKILL) at +${KILL_AT}s"
[ "$RESTART" = 1 ] && timeline+=", restarted ${RESTART_AFTER}s later"
echo
echo "Failover: wrk -t$THREADS -c$CONNECTIONS -d$DURATION $SCENARIO; $timeline; $(nproc) CPUs, PIN=$PIN"
printf '%-11s %9s %8s %8s %14s %11s %7s %11s\n' proxy requests req/s non-2xx "socket errors" "(c/r/w/t)" failed "back after"
maxo=0
for name in "${RUN[@]}"; do
    read -r req rps non c r w t failed back others <<<"${RESULT[$name]}"
    [ "$RESTART" = 1 ] || back=-
    [[ $back == - || $back == ">"* ]] || back="${back}s"
    [ "$others" -le "$maxo" ] || maxo=$others
    printf '%-11s %9d %8.0f %8d %14d %11s %7d %11s\n' "$name" "$req" "$rps" "$non" $((c + r + w + t)) "$c/$r/$w/$t" "$failed" "$back"
done
echo "failed = non-2xx + socket errors (connect/read/write/timeout), as wrk counts them"
[ "$RESTART" = 0 ] || echo "back after = seconds from the restart until a client request was answered by $KILLED again"
echo "CPU used by other processes during a run: at most $maxo% of the machine$([ "$maxo" -le 5 ] || echo " (req/s is noisy: rerun on a quiet machine)")"
echo "raw results: ${CSV#"$ROOT"/}"
if [[ " ${RUN[*]} " == *" switchyard "* ]]; then
    read -r _ _ _ _ _ _ _ failed _ _ <<<"${RESULT[switchyard]}"
    if [ "$failed" -eq 0 ]; then
        echo "switchyard: zero failed requests (the goal)"
    else
        echo "switchyard: $failed failed requests (the goal is zero; logs in $TMP/switchyard)"
        KEEP_TMP=1
    fi
fi
