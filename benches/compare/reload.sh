#!/usr/bin/env bash
# Reload under load. The same script runs against Switchyard (SIGHUP), nginx
# (`nginx -s reload`) and HAProxy (master-worker, SIGUSR2 to the master), one
# proxy at a time, each with three fresh origins. Config A routes to origins 1
# and 2, config B to origins 2 and 3, so every reload changes the server set.
# For each proxy, wrk runs twice for DURATION: once without reloads (the
# baseline) and once while the script performs RELOADS reloads, INTERVAL
# seconds apart, alternating B and A. Each reload writes the config file
# atomically (temp file + mv), then triggers the reload. The script prints each
# proxy's failed requests and its p99 with and without reloads. curl probes on
# new connections check that both configs' routing was observed. The goal for
# Switchyard is zero errors and no p99 spike. See README.md next to this file.
# Linux only; run as root or with sudo when nginx/haproxy/wrk still need
# installing.
#
#   benches/compare/reload.sh
#   RELOADS=200 INTERVAL=0.1 DURATION=30s benches/compare/reload.sh
#   PROXIES="nginx haproxy" BUILD=0 benches/compare/reload.sh
#
# Knobs (environment): PROXIES THREADS CONNECTIONS DURATION WARMUP SCENARIO
# RELOADS INTERVAL RELOAD_AT PROBE_INTERVAL PIN BUILD SY_PORT NGINX_PORT
# HAPROXY_PORT ORIGIN_PORTS KEEP_TMP.
set -euo pipefail
export LC_ALL=C # the decimal point in $EPOCHREALTIME and awk's output

PROXIES=${PROXIES:-"switchyard nginx haproxy"} # which proxies run, in this order
THREADS=${THREADS:-1}            # wrk threads
CONNECTIONS=${CONNECTIONS:-50}   # wrk connections
DURATION=${DURATION:-20s}        # each measured wrk run (baseline and reloads)
WARMUP=${WARMUP:-3s}             # one unmeasured wrk run per proxy first; 0 skips it
SCENARIO=${SCENARIO:-/ping}      # the path wrk requests
RELOADS=${RELOADS:-100}          # reloads during the second run
INTERVAL=${INTERVAL:-0.15}       # seconds between two reloads
RELOAD_AT=${RELOAD_AT:-2}        # seconds after wrk starts, the first reload
PROBE_INTERVAL=${PROBE_INTERVAL:-0.1} # seconds between two curl probes
PIN=${PIN:-1}                    # 1: origins on CPU 0, wrk on CPU 1, proxies free
BUILD=${BUILD:-1}                # 0: use target/release/switchyard as it is
SY_PORT=${SY_PORT:-18100}
NGINX_PORT=${NGINX_PORT:-18101}
HAPROXY_PORT=${HAPROXY_PORT:-18102}
ORIGIN_PORTS=${ORIGIN_PORTS:-"19121 19122 19123"}
KEEP_TMP=${KEEP_TMP:-0}          # 1: keep the temp dir (configs, logs, wrk output)

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PROG=reload
# shellcheck source=benches/compare/common.sh
. "$HERE/common.sh"
help_or_no_args "$@"
read -r -a ORIGINS <<<"$ORIGIN_PORTS"
read -r -a RUN <<<"$PROXIES"
declare -A PORT=([switchyard]=$SY_PORT [nginx]=$NGINX_PORT [haproxy]=$HAPROXY_PORT)
# The live config file of each proxy, the one reloads rewrite: in a directory
# of its own, DIR/live, where nothing else is written.
declare -A CONF=([switchyard]=switchyard.toml [nginx]=nginx.conf [haproxy]=haproxy.cfg)

# ------------------------------------------------------------------ arguments
case $SCENARIO in /*) ;; *) die "SCENARIO must start with /: $SCENARIO" ;; esac
[ ${#ORIGINS[@]} -eq 3 ] || die "ORIGIN_PORTS needs three ports: $ORIGIN_PORTS"
[ ${#RUN[@]} -gt 0 ] || die "PROXIES is empty"
for p in "${RUN[@]}"; do
    [ -n "${PORT[$p]:-}" ] || die "unknown proxy in PROXIES: $p (switchyard, nginx, haproxy)"
done
[[ $RELOADS =~ ^[1-9][0-9]*$ ]] || die "RELOADS must be a whole number above 0: $RELOADS"
is_num() { [[ $1 =~ ^[0-9]+([.][0-9]+)?$ ]]; }
for v in INTERVAL RELOAD_AT PROBE_INTERVAL; do
    is_num "${!v}" || die "$v must be a number of seconds: ${!v}"
done
# wrk's duration syntax (10, 10s, 2m, 1h) → seconds; "" if it is not one.
duration_s() {
    awk -v d="$1" 'BEGIN {
        n = d + 0; u = d; sub(/^[0-9.]+/, "", u)
        f = (u == "" || u == "s") ? 1 : (u == "m") ? 60 : (u == "h") ? 3600 : -1
        if (f < 0 || n <= 0) print ""; else print n * f }'
}
DURATION_S=$(duration_s "$DURATION")
[ -n "$DURATION_S" ] || die "DURATION must look like 20s, 2m or 1h: $DURATION"
[ "$WARMUP" = 0 ] || [ -n "$(duration_s "$WARMUP")" ] || die "WARMUP must look like 3s, or be 0: $WARMUP"
LAST_RELOAD=$(awk -v a="$RELOAD_AT" -v n="$RELOADS" -v i="$INTERVAL" 'BEGIN {print a + (n - 1) * i}')
awk -v e="$LAST_RELOAD" -v d="$DURATION_S" 'BEGIN {exit !(e + 1 <= d)}' ||
    die "the last reload, at RELOAD_AT + (RELOADS - 1) × INTERVAL = ${LAST_RELOAD}s, must be at least 1 s before wrk ends (DURATION=$DURATION)"

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
check_ports SY_PORT/NGINX_PORT/HAPROXY_PORT/ORIGIN_PORTS "${ALL_PORTS[@]}"

# Other work on the machine raises the p99 of both runs; say so.
warn_if_busy "the run starts; latencies will be noisy"

make_workdir reload
# Not TMP/switchyard: that is the directory of the switchyard run.
copy_switchyard "$TMP/bin"
pin_setup

# ------------------------------------------------------------------- helpers
# since T: seconds from $EPOCHREALTIME value T until now, to 0.1 s.
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}'; }
sleep_until() { # absolute $EPOCHREALTIME
    local d
    d=$(awk -v t="$1" -v n="$EPOCHREALTIME" 'BEGIN {d = t - n; printf "%.3f", (d > 0 ? d : 0)}')
    sleep "$d"
}

# alive PID: the process runs (a zombie, not yet reaped by us, does not).
alive() {
    local s
    s=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ $s != Z* ]]
}

# x-origin values of N requests to URL on one new connection, sorted, unique,
# space-separated.
origin_set() { # url n
    local args=() i
    for i in $(seq "$2"); do args+=(-o /dev/null "$1"); done
    curl -sS -g -m 2 -D - "${args[@]}" 2>/dev/null | x_origins | sort -u | tr '\n' ' ' | sed 's/ $//' || true
}

# The origins each config routes to, as origin_set prints them.
declare -A EXPECT=([A]="origin1 origin2" [B]="origin2 origin3")

# wait_routing URL CONFIG: up to 5 s for 4 requests on one connection to reach
# exactly CONFIG's two origins. Prints what the last probe saw; fails if that
# is not the expected set.
wait_routing() {
    local got=
    for _ in $(seq 50); do
        got=$(origin_set "$1" 4)
        [ "$got" = "${EXPECT[$2]}" ] && break
        sleep 0.1
    done
    echo "${got:--}"
    [ "$got" = "${EXPECT[$2]}" ]
}

# probe_loop URL OUT STOPFILE: until STOPFILE exists, every PROBE_INTERVAL
# seconds, two requests to URL on one new connection. One line per probe in
# OUT: "TIME CURL_EXIT CODES ORIGINS" (lists comma-separated, "-" if empty).
# Round-robin over two servers sends the two requests to both.
probe_loop() {
    local heads rc codes origins
    while [ ! -e "$3" ]; do
        rc=0
        heads=$(curl -sS -g -m 2 -D - -o /dev/null "$1" -o /dev/null "$1" 2>>"$2.err") || rc=$?
        codes=$(awk '/^HTTP\// {print $2}' <<<"$heads" | paste -sd, -)
        origins=$(x_origins <<<"$heads" | paste -sd, -)
        echo "$EPOCHREALTIME $rc ${codes:--} ${origins:--}"
        sleep "$PROBE_INTERVAL"
    done >"$2"
}

# probe_stats FILE → "probes errors origin1 origin2 origin3": the number of
# probes, those that failed (curl error or a status other than 200), and how
# many responses came from each origin.
probe_stats() {
    awk '{
            n++
            if ($2 != 0 || $3 != "200,200") bad++
            k = split($4, o, ",")
            for (i = 1; i <= k; i++) seen[o[i]]++
        }
        END { printf "%d %d %d %d %d\n", n, bad, seen["origin1"], seen["origin2"], seen["origin3"] }' "$1"
}

# wrk_summary FILE → "requests rps non2xx connect read write timeout p50 p99
# max", the latencies in µs, from wrk --latency output.
wrk_summary() {
    local counts p50 p99 max
    counts=$(awk '
        /requests in/ { req = $1 }
        /^Requests\/sec:/ { rps = $2 }
        /Non-2xx or 3xx responses:/ { non = $NF }
        /Socket errors:/ { gsub(/,/, ""); c = $4; r = $6; w = $8; t = $10 }
        END { printf "%s %s %d %d %d %d %d\n", req, rps, non, c, r, w, t }' "$1")
    p50=$(to_us "$(awk '$1 == "50%" {print $2}' "$1")")
    p99=$(to_us "$(awk '$1 == "99%" {print $2}' "$1")")
    max=$(to_us "$(awk '$1 == "Latency" {print $4; exit}' "$1")")
    echo "$counts $p50 $p99 $max"
}

run_wrk() { # url duration outfile
    ${PIN_WRK[@]+"${PIN_WRK[@]}"} wrk -t"$THREADS" -c"$CONNECTIONS" -d"$2" --latency "$1" >"$3" 2>&1
}

# ---------------------------------------------- CPU used by other processes
# As in failover.sh: the machine's busy ticks during a run minus those of
# everything this script started. utime+stime+cutime+cstime of this shell,
# every live pid and its children: the proxies' reaped old workers land in the
# master's cutime, wrk, curl and `nginx -s reload` in this shell's or the probe
# loop's.
own_ticks() { ticks_of all "$$ $(with_children "${!LIVE[@]}")"; }

# ------------------------------------------------------------------- reloads
# trigger NAME DIR PID: makes the proxy read its config file again.
trigger() {
    case $1 in
        switchyard) kill -HUP "$3" ;;
        nginx) nginx -s reload -p "$2" -c "$2/live/nginx.conf" -e "$2/error.log" ;;
        haproxy) kill -USR2 "$3" ;;
    esac >>"$2/signal.log" 2>&1
}

# reloads_applied NAME DIR → what the proxy's own log says it applied: for
# Switchyard its "configuration reloaded" lines, for nginx the master's
# "reconfiguring" lines, for HAProxy the master's "Loading success." lines
# minus the one at startup. A reload that comes while the previous one is still
# in progress may be merged with it, so this can be below the number sent.
reloads_applied() {
    local n
    case $1 in
        switchyard) n=$(sed 's/\x1b\[[0-9;]*m//g' "$2/switchyard.log" | grep -c 'configuration reloaded' || true) ;;
        nginx) n=$(grep -cE '#[0-9]+: reconfiguring$' "$2/error.log" || true) ;;
        haproxy) n=$(grep -c 'Loading success' "$2/haproxy.log" || true); n=$(( ${n:-0} > 0 ? n - 1 : 0 )) ;;
    esac
    echo "${n:-0}"
}

# ------------------------------------------------------------- one proxy run
declare -A RESULT=() NOTE=()

# measure NAME DIR PID KIND: one wrk run of DURATION with the probes running;
# with KIND=reload, also the reloads. Sets M_OTHERS (CPU % used by other
# processes) and M_SENT/M_TRIGGER_FAILED/M_SPAN (reloads sent, how many of the
# trigger commands failed, seconds from the first to the last).
measure() {
    local name=$1 dir=$2 pid=$3 kind=$4 url="http://127.0.0.1:${PORT[$1]}$SCENARIO"
    local t0 pid_wrk pid_probe stopfile=$dir/stop-probes-$4 i cfg t_first='' rc=0
    local busy0 total0 own0 busy1 total1 own1 others
    M_SENT=0 M_TRIGGER_FAILED=0 M_SPAN=0
    rm -f "$stopfile"
    probe_loop "http://127.0.0.1:${PORT[$name]}/ping" "$dir/probes-$kind.txt" "$stopfile" &
    pid_probe=$!
    track "$pid_probe"

    read -r busy0 total0 < <(machine_ticks)
    own0=$(own_ticks)
    t0=$EPOCHREALTIME
    run_wrk "$url" "$DURATION" "$dir/wrk-$kind.txt" &
    pid_wrk=$!
    track "$pid_wrk"

    if [ "$kind" = reload ]; then
        : >"$dir/reloads.txt"
        for i in $(seq "$RELOADS"); do
            sleep_until "$(awk -v a="$t0" -v s="$RELOAD_AT" -v k="$i" -v d="$INTERVAL" 'BEGIN {printf "%.6f", a + s + (k - 1) * d}')"
            # Odd reloads switch to B, even ones back to A.
            if [ $((i % 2)) = 1 ]; then cfg=B; else cfg=A; fi
            cp "$dir/$cfg.conf" "$dir/live/${CONF[$name]}.tmp"
            mv -f "$dir/live/${CONF[$name]}.tmp" "$dir/live/${CONF[$name]}"
            [ -n "$t_first" ] || t_first=$EPOCHREALTIME
            # A proxy that died is not signalled again: its pid may be reused.
            if ! alive "$pid"; then
                log "$name is no longer running; reloads stopped after $M_SENT"
                break
            fi
            if trigger "$name" "$dir" "$pid"; then
                echo "$EPOCHREALTIME $cfg" >>"$dir/reloads.txt"
            else
                echo "$EPOCHREALTIME $cfg FAILED" >>"$dir/reloads.txt"
                M_TRIGGER_FAILED=$((M_TRIGGER_FAILED + 1))
            fi
            M_SENT=$i
        done
        M_SPAN=$(since "$t_first")
        log "$name: $M_SENT reloads sent over ${M_SPAN}s, from +${RELOAD_AT}s"
    fi

    wait "$pid_wrk" || rc=$?
    unset "LIVE[$pid_wrk]"
    read -r busy1 total1 < <(machine_ticks)
    own1=$(own_ticks)
    touch "$stopfile"
    wait "$pid_probe" || true
    unset "LIVE[$pid_probe]"
    others=$(( (busy1 - busy0) - (own1 - own0) ))
    M_OTHERS=$(( (others > 0 ? others : 0) * 100 / (total1 - total0 > 0 ? total1 - total0 : 1) ))
    [ $rc -eq 0 ] || { cat "$dir/wrk-$kind.txt" >&2; die "wrk against $name failed (exit $rc)"; }
}

run_one() {
    local name=$1 port=${PORT[$1]} dir=$TMP/$1 i p pid_proxy url got conf ext
    local -a opids=()
    mkdir -p "$dir/live"
    url="http://127.0.0.1:$port$SCENARIO"
    conf=$dir/live/${CONF[$name]}

    log "$name: starting origins on ${ORIGINS[*]} and $name on :$port"
    for i in 1 2 3; do
        p=${ORIGINS[i - 1]}
        start "opids[$i]" "origin$i" "$p" "$dir/origin$i.log" \
            ${PIN_ORIGINS[@]+"${PIN_ORIGINS[@]}"} "$SY" origin --listen "127.0.0.1:$p" --name "origin$i"
    done

    # Configs A (origins 1, 2) and B (origins 2, 3), both checked by the proxy.
    case $name in switchyard) ext=toml ;; nginx) ext=conf ;; haproxy) ext=cfg ;; esac
    local cfg first
    for cfg in A B; do
        if [ $cfg = A ]; then first=1; else first=2; fi
        render "$HERE/reload-$name.$ext.tmpl" "$dir/$cfg.conf" "$dir" "$port" \
            "s|@SERVER_1@|127.0.0.1:${ORIGINS[first - 1]}|g" "s|@SERVER_2@|127.0.0.1:${ORIGINS[first]}|g" \
            "s|@NAME_1@|o$first|g" "s|@NAME_2@|o$((first + 1))|g"
        case $name in
            switchyard)
                "$SY" check --config "$dir/$cfg.conf" >"$dir/check.log" 2>&1 ||
                    die "switchyard rejected config $cfg ($dir/$cfg.conf):
$(cat "$dir/check.log")" ;;
            nginx)
                nginx -t -q -p "$dir" -c "$dir/$cfg.conf" -e "$dir/error.log" ||
                    die "nginx rejected config $cfg ($dir/$cfg.conf)" ;;
            haproxy)
                haproxy -c -q -f "$dir/$cfg.conf" || die "haproxy rejected config $cfg ($dir/$cfg.conf)" ;;
        esac
    done
    cp "$dir/A.conf" "$conf"
    if [ "$name" = switchyard ]; then
        log "switchyard: what each reload from A to B changes (switchyard check --diff-against):"
        "$SY" check --config "$dir/B.conf" --diff-against "$dir/A.conf" 2>&1 | sed 's/^/     /' >&2 || true
    fi

    case $name in
        switchyard)
            # info: the "configuration reloaded" lines that are counted.
            # --no-watch: SIGHUP alone reloads. With the file watch on, each
            # rename would also reload from the watch.
            RUST_LOG=${RUST_LOG:-info} start pid_proxy switchyard "$port" "$dir/switchyard.log" \
                "$SY" run --no-watch --config "$conf"
            ;;
        nginx)
            start pid_proxy nginx "$port" "$dir/nginx.log" \
                nginx -p "$dir" -c "$conf" -e "$dir/error.log"
            ;;
        haproxy)
            # -W: master-worker; -db: the master stays in the foreground.
            start pid_proxy haproxy "$port" "$dir/haproxy.log" haproxy -W -db -f "$conf"
            ;;
    esac

    got=$(wait_routing "$url" A) || die "$name with config A should route to ${EXPECT[A]}; 4 requests reached: $got"

    if [ "$WARMUP" != 0 ]; then
        run_wrk "$url" "$WARMUP" "$dir/wrk-warmup.txt" || { cat "$dir/wrk-warmup.txt" >&2; die "wrk against $name failed"; }
    fi

    # ---- baseline: config A, no reloads.
    log "$name: baseline, wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency $SCENARIO, no reloads"
    measure "$name" "$dir" "$pid_proxy" base
    local base_others=$M_OTHERS b_req b_rps b_non b_c b_r b_w b_t b_p50 b_p99 b_max
    read -r b_req b_rps b_non b_c b_r b_w b_t b_p50 b_p99 b_max < <(wrk_summary "$dir/wrk-base.txt")
    if [ -z "$b_req" ] || [ -z "$b_rps" ] || [ "$b_req" -eq 0 ]; then
        cat "$dir/wrk-base.txt" >&2
        die "could not parse wrk output for $name (baseline)"
    fi
    local b_failed=$((b_non + b_c + b_r + b_w + b_t))
    log "$name: baseline $b_req requests, $b_rps req/s, failed $b_failed, p50 $b_p50 us, p99 $b_p99 us"
    [ "$b_failed" -eq 0 ] || NOTE[$name]+="baseline had $b_failed failed requests; "

    # ---- the same with RELOADS reloads.
    log "$name: $RELOADS reloads every ${INTERVAL}s from +${RELOAD_AT}s, alternating configs B and A"
    measure "$name" "$dir" "$pid_proxy" reload
    local others=$M_OTHERS sent=$M_SENT tfail=$M_TRIGGER_FAILED
    local req rps non c r w t p50 p99 max
    read -r req rps non c r w t p50 p99 max < <(wrk_summary "$dir/wrk-reload.txt")
    if [ -z "$req" ] || [ -z "$rps" ] || [ "$req" -eq 0 ]; then
        cat "$dir/wrk-reload.txt" >&2
        die "could not parse wrk output for $name (reloads)"
    fi
    local failed=$((non + c + r + w + t))
    [ "$tfail" -eq 0 ] || NOTE[$name]+="$tfail reload commands failed (see $dir/signal.log); "

    # ---- afterwards: still running, and serving the config written last?
    local last=A alive_after=yes final=- applied
    [ $((RELOADS % 2)) = 1 ] && last=B
    if alive "$pid_proxy"; then
        if final=$(wait_routing "$url" "$last"); then final="yes ($final)"; else final="NO ($final)"; fi
    else
        alive_after=no
        local code=0
        wait "$pid_proxy" || code=$?
        unset "LIVE[$pid_proxy]"
        NOTE[$name]+="$name EXITED during the reloads (status $code); "
        log "$name exited during the reloads (status $code); the end of its log:"
        tail -n 15 "$dir/$name.log" | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-200 | sed 's/^/     /' >&2 || true
    fi
    applied=$(reloads_applied "$name" "$dir")

    # ---- the probes: which origins answered, and did any probe fail?
    local n_probe bad o1 o2 o3 bn bbad bo3 both=no
    read -r n_probe bad o1 o2 o3 < <(probe_stats "$dir/probes-reload.txt")
    read -r bn bbad _ _ bo3 < <(probe_stats "$dir/probes-base.txt")
    [ "$o1" -gt 0 ] && [ "$o3" -gt 0 ] && both=yes
    [ "$bo3" -eq 0 ] || NOTE[$name]+="origin3 answered $bo3 baseline probes under config A; "

    local ratio
    ratio=$(awk -v a="$p99" -v b="$b_p99" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}')
    RESULT[$name]="$req $rps $non $c $r $w $t $failed $p50 $p99 $b_p99 $ratio $sent $applied $n_probe $bad $both $others $base_others"
    ROUTING[$name]="routing A and B both observed: $both (reload-run probes answered by origin1 $o1, origin2 $o2, origin3 $o3); config $last serving at the end: $final"
    [ -s "$CSV" ] || echo "proxy,threads,connections,duration,scenario,reloads,interval_s,reload_at_s,reloads_sent,reloads_applied,reload_span_s,requests,rps,non2xx,sock_connect,sock_read,sock_write,sock_timeout,failed,p50_us,p99_us,max_us,base_requests,base_rps,base_failed,base_p50_us,base_p99_us,base_max_us,p99_ratio,probes,probe_errors,probe_origin1,probe_origin2,probe_origin3,base_probes,base_probe_errors,routing_both,alive_after,others_cpu_pct,base_others_cpu_pct" >"$CSV"
    echo "$name,$THREADS,$CONNECTIONS,$DURATION,$SCENARIO,$RELOADS,$INTERVAL,$RELOAD_AT,$sent,$applied,$M_SPAN,$req,$rps,$non,$c,$r,$w,$t,$failed,$p50,$p99,$max,$b_req,$b_rps,$b_failed,$b_p50,$b_p99,$b_max,$ratio,$n_probe,$bad,$o1,$o2,$o3,$bn,$bbad,$both,$alive_after,$others,$base_others" >>"$CSV"
    log "$name: $req requests, $rps req/s, non-2xx $non, socket errors connect $c read $r write $w timeout $t; p50 $p50 us, p99 $p99 us (baseline $b_p99 us), max $max us; reloads applied $applied/$sent; probes $n_probe, failed $bad; others used ${others}% of the CPUs"
    [ "$bbad" -eq 0 ] || NOTE[$name]+="$bbad of $bn baseline probes failed; "

    details "$name" "$dir"
    if [ "$alive_after" = yes ]; then stop "$pid_proxy" "${opids[@]}"; else stop "${opids[@]}"; fi
}

# What each proxy itself said during the runs: its log lines other than the
# usual ones, counted, with ANSI colours and pids taken out.
details() {
    local name=$1 dir=$2 what lines
    case $name in
        switchyard)
            what="switchyard.log, warnings and errors"
            lines=$(sed 's/\x1b\[[0-9;]*m//g' "$dir/switchyard.log" | grep -E "WARN|ERROR" |
                sed -E 's/^[0-9T:.Z-]+ +//' || true)
            ;;
        nginx)
            what="error.log, lines above notice level"
            lines=$(grep -vE '\[notice\]' "$dir/error.log" 2>/dev/null |
                sed -E 's/^[0-9\/]+ [0-9:]+ (\[[a-z]+\]) [0-9#]+: \*?[0-9]* ?/\1 /; s/, client: .*//' || true)
            ;;
        haproxy)
            what="master log, other than the usual reload lines"
            lines=$(grep -vE 'New worker|Loading success|Reloading HAProxy|haproxy version|path to executable|Proxy .* stopped|exited with code 0' \
                "$dir/haproxy.log" 2>/dev/null | sed -E 's/\([0-9]+\)/(PID)/g' || true)
            ;;
    esac
    if [ -z "$lines" ]; then
        echo "     $what: none" >&2
    else
        echo "     $what:" >&2
        sort <<<"$lines" | uniq -c | sort -rn | head -n 8 | cut -c1-200 | sed 's/^/     /' >&2
    fi
}

# ------------------------------------------------------------------ the runs
declare -A ROUTING=()
for name in "${RUN[@]}"; do
    run_one "$name"
done

# --------------------------------------------------------------------- table
echo
echo "Reload under load: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency $SCENARIO; $RELOADS reloads every ${INTERVAL}s from +${RELOAD_AT}s,"
echo "alternating config B (origins 2+3) and A (origins 1+2); baseline: the same run without reloads; $(nproc) CPUs, PIN=$PIN"
printf '%-11s %9s %8s %8s %14s %15s %7s %7s %8s %9s %6s %8s %9s %9s\n' \
    proxy requests req/s non-2xx "socket errors" "(c/r/w/t)" failed "p50 us" "p99 us" "p99 base" ratio reloads "probe err" "others %"
maxo=0
for name in "${RUN[@]}"; do
    read -r req rps non c r w t failed p50 p99 bp99 ratio sent applied n_probe bad both others base_others <<<"${RESULT[$name]}"
    [ "$others" -le "$maxo" ] || maxo=$others
    [ "$base_others" -le "$maxo" ] || maxo=$base_others
    printf '%-11s %9d %8.0f %8d %14d %15s %7d %7d %8d %9d %6s %8s %9s %9s\n' "$name" "$req" "$rps" "$non" \
        $((c + r + w + t)) "$c/$r/$w/$t" "$failed" "$p50" "$p99" "$bp99" "$ratio" "$applied/$sent" "$bad/$n_probe" "$others/$base_others"
done
echo "failed = non-2xx + socket errors (connect/read/write/timeout), as wrk counts them, in the run with reloads"
echo "ratio = p99 with reloads / p99 baseline; reloads = applied (from the proxy's log) / sent"
echo "probe err = curl probes (2 requests on a new connection every ${PROBE_INTERVAL}s) that failed, of all probes, during the reloads"
echo "others % = CPU used by processes the script did not start, in % of the machine: run with reloads / baseline"
for name in "${RUN[@]}"; do
    echo "$name: ${ROUTING[$name]}"
    [ -z "${NOTE[$name]:-}" ] || echo "$name: NOTE: ${NOTE[$name]%; }"
done
[ "$maxo" -le 5 ] || echo "other processes used up to $maxo% of the machine during a run: latencies are noisy, rerun on a quiet machine"
echo "raw results: ${CSV#"$ROOT"/}"
if [[ " ${RUN[*]} " == *" switchyard "* ]]; then
    read -r _ _ _ _ _ _ _ failed _ _ _ ratio _ _ _ bad _ _ _ <<<"${RESULT[switchyard]}"
    if [ "$failed" -eq 0 ] && [ "$bad" -eq 0 ] && [ -z "${NOTE[switchyard]:-}" ]; then
        echo "switchyard: zero failed requests during $RELOADS reloads (the goal); p99 ratio $ratio"
    else
        echo "switchyard: $failed failed requests, $bad failed probes (the goal is zero; logs in $TMP/switchyard)"
        KEEP_TMP=1
    fi
fi
