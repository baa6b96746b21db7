#!/usr/bin/env bash
# DNS discovery (issue 16) end to end: what re-resolving a large, changing
# answer every second costs the request path, and the memory of 10 000
# discovered servers. A DNS server of its own (discovery_dns.py, over UDP and
# TCP on loopback) answers the proxy's queries. See README.md next to this
# file. Linux only; run as root or with sudo when wrk still needs installing.
#
#   benches/compare/discovery.sh                    # both parts, about 2.5 minutes
#   PARTS=requests ROUNDS=5 benches/compare/discovery.sh
#   PARTS=memory SERVERS=10000 NAMES=5 benches/compare/discovery.sh
#
# Part "requests": one switchyard in front of three origins; wrk requests
# GET SCENARIO on a route to them. Two configurations, swapped by reload
# (POST /config/reload) so that only one runs at a time, alternate in each
# round (off on, then on off, ...):
#   off  no discovered upstream;
#   on   the same, plus an upstream `pool` that no route uses, with one entry
#        { addr = "pool.bench.test:9", resolve = true } and [resolver]
#        valid = "1s", min_ttl = "1s". The DNS server answers POOL_SIZE
#        addresses with TTL 1 and moves one address a second, so every
#        re-resolution (one a second) brings a changed set: the upstream is
#        rebuilt and a snapshot swapped every second, the worst case for the
#        requests being served meanwhile.
# Prints req/s, p50/p99, CPU per request, RSS, the re-resolutions and the
# addresses that changed during each run, and the on/off ratios.
#
# Part "memory": a switchyard whose upstream `mem` has NAMES resolve = true
# entries of SERVERS / NAMES addresses each (max_servers = SERVERS), against
# the same configuration whose names answer no address; the RSS difference
# and bytes per server. Both with a route to `mem` ("routed": per-server
# request counters exist, as in use) and without ("unrouted").
#
# Knobs (environment): PARTS THREADS CONNECTIONS DURATION WARMUP ROUNDS
# SCENARIO PIN POOL_SIZE POOL_ROUTE SETTLE SERVERS NAMES MEM_ROUNDS MEM_TIMEOUT
# MEM_KEEPALIVE BUILD SY_PORT ADMIN_PORT MEM_PORT MEM_ADMIN_PORT DNS_PORT ORIGIN_PORTS
# KEEP_TMP.
set -euo pipefail
export LC_ALL=C

PARTS=${PARTS:-"requests memory"}
THREADS=${THREADS:-1}          # wrk threads
CONNECTIONS=${CONNECTIONS:-50} # wrk connections
DURATION=${DURATION:-10s}      # one measured run
WARMUP=${WARMUP:-3s}           # one unmeasured run per configuration before round 1
ROUNDS=${ROUNDS:-3}
SCENARIO=${SCENARIO:-/ping}    # the path wrk requests
PIN=${PIN:-0}                  # as run.sh: 0 pins nothing (how results are reported)
POOL_SIZE=${POOL_SIZE:-200}    # addresses of the re-resolved name
POOL_ROUTE=${POOL_ROUTE:-0}    # 1: a route /pool/ (never requested) sends to `pool`
SETTLE=${SETTLE:-2}            # seconds after a reload before a run
SERVERS=${SERVERS:-10000}      # memory: discovered servers in all
NAMES=${NAMES:-5}              # memory: over this many names
MEM_ROUNDS=${MEM_ROUNDS:-3}    # memory: processes per variant and kind
MEM_TIMEOUT=${MEM_TIMEOUT:-60} # memory: seconds for the answers and a steady RSS
MEM_KEEPALIVE=${MEM_KEEPALIVE:-} # memory: `keepalive` of upstream mem (empty: the default)
BUILD=${BUILD:-1}              # 0: target/release/switchyard as it is, no cargo
SY_PORT=${SY_PORT:-18190}
ADMIN_PORT=${ADMIN_PORT:-18191}
MEM_PORT=${MEM_PORT:-18192}
MEM_ADMIN_PORT=${MEM_ADMIN_PORT:-18193}
DNS_PORT=${DNS_PORT:-18195}    # UDP and TCP
ORIGIN_PORTS=${ORIGIN_PORTS:-"19191 19192 19193"}
KEEP_TMP=${KEEP_TMP:-0}

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PROG=discovery
# shellcheck source=benches/compare/common.sh
. "$HERE/common.sh"
help_or_no_args "$@"

REQUESTS=0; MEMORY=0
for p in $PARTS; do
    case $p in
        requests) REQUESTS=1 ;;
        memory) MEMORY=1 ;;
        *) die "unknown part in PARTS: $p (requests, memory)" ;;
    esac
done
[ $((REQUESTS + MEMORY)) -gt 0 ] || die "PARTS is empty"
for v in ROUNDS POOL_SIZE SERVERS NAMES MEM_ROUNDS MEM_TIMEOUT SETTLE; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer: ${!v}"
done
# A DNS message over TCP holds at most 64 KiB: about 4 000 A records.
MAX_PER_NAME=4000
PER_NAME=$((SERVERS / NAMES))
[ $((PER_NAME * NAMES)) -eq "$SERVERS" ] || die "SERVERS ($SERVERS) must be a multiple of NAMES ($NAMES)"
[ "$PER_NAME" -le $MAX_PER_NAME ] || die "SERVERS / NAMES = $PER_NAME addresses per name; at most $MAX_PER_NAME fit in a DNS message (raise NAMES)"
[ "$POOL_SIZE" -le $MAX_PER_NAME ] || die "POOL_SIZE must be at most $MAX_PER_NAME"
[ "$NAMES" -le 100 ] || die "NAMES must be at most 100"
[ -z "$MEM_KEEPALIVE" ] || [[ $MEM_KEEPALIVE =~ ^[0-9]+$ ]] || die "MEM_KEEPALIVE must be an integer: $MEM_KEEPALIVE"

# The discovered addresses: never connected to (no health check, and no request
# goes to them), each name in a /16 of its own on loopback. The pool's ring of
# 2 × POOL_SIZE addresses starts at POOL_FIRST; memory name k at 127.(110+k).0.1.
POOL_NAME=pool.bench.test
POOL_FIRST=127.100.0.1
TARGET_PORT=9

[ "$REQUESTS" = 0 ] || install_missing wrk
require ss curl getconf python3 awk comm
if ! python3 -c 'import dnslib' 2>/dev/null; then
    log "installing dnslib (pip)"
    python3 -m pip install --quiet dnslib || die "cannot install dnslib; pip install dnslib"
fi
if [ "$BUILD" = 1 ]; then build_switchyard; fi
[ -x "$ROOT/target/release/switchyard" ] || die "no target/release/switchyard; run with BUILD=1"
read -r -a ORIGINS <<<"$ORIGIN_PORTS"
ports=("$DNS_PORT")
[ "$REQUESTS" = 0 ] || ports+=("$SY_PORT" "$ADMIN_PORT" "${ORIGINS[@]}")
[ "$MEMORY" = 0 ] || ports+=("$MEM_PORT" "$MEM_ADMIN_PORT")
check_ports "SY_PORT/ADMIN_PORT/MEM_PORT/MEM_ADMIN_PORT/DNS_PORT/ORIGIN_PORTS" "${ports[@]}"
warn_if_busy "the benchmark starts; results will be noisy"
make_workdir discovery
copy_switchyard "$TMP"
pin_setup
declare -A PID=()
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- DNS server
DNS_LOG=$TMP/dns-answers.log
: >"$DNS_LOG"
specs=("$POOL_NAME=$POOL_SIZE@$POOL_FIRST,ttl=1,rotate")
for k in $(seq "$NAMES"); do
    # The memory names hold still (a long TTL; [resolver] keeps its default
    # valid = 30s), so the measured process does no further lookup before the
    # reading.
    specs+=("mem-$k.bench.test=$PER_NAME@127.$((110 + k)).0.1,ttl=300" "none-$k.bench.test=0@127.$((110 + k)).0.1,ttl=300")
done
log "starting the DNS server on 127.0.0.1:$DNS_PORT (UDP and TCP)"
launch dns "$DNS_PORT" python3 "$HERE/discovery_dns.py" --listen "127.0.0.1:$DNS_PORT" --log "$DNS_LOG" "${specs[@]}"

# ---------------------------------------------------------------- helpers
# rss_of PID FIELD: VmRSS or VmHWM of PID, in KiB.
rss_of() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }

# metric_sum ADMIN_PORT NAME FILTER...: the sum of the samples of metric NAME
# whose labels contain every FILTER (e.g. 'upstream="pool"').
metric_sum() {
    local port=$1 name=$2; shift 2
    curl -sS "http://127.0.0.1:$port/metrics" | awk -v name="$name" -v filters="$*" '
        BEGIN { n = split(filters, f, " ") }
        index($0, name "{") == 1 {
            for (i = 1; i <= n; i++) if (index($0, f[i]) == 0) next
            s += $NF
        }
        END { print s + 0 }'
}

# server_addrs ADMIN_PORT UPSTREAM: its servers' addresses, sorted, one a line
# (nothing when the upstream does not exist).
server_addrs() {
    curl -sS "http://127.0.0.1:$1/upstreams/$2" | python3 -c '
import json, sys
servers = json.load(sys.stdin).get("servers", [])
print("\n".join(sorted(s["addr"] for s in servers)))' | sed '/^$/d'
}

# ============================================================ part: requests
if [ "$REQUESTS" = 1 ]; then
    start_origins

    # off: the run.sh template, an admin listener (both configurations have the
    # metrics on) and the resolver; on: the same plus the discovered upstream.
    render "$HERE/switchyard.toml.tmpl" "$TMP/off.toml" "$TMP" "$SY_PORT"
    cat >>"$TMP/off.toml" <<EOF

[admin]
listen = "127.0.0.1:$ADMIN_PORT"

[resolver]
servers = ["127.0.0.1:$DNS_PORT"]
valid = "1s"
min_ttl = "1s"
EOF
    cp "$TMP/off.toml" "$TMP/on.toml"
    cat >>"$TMP/on.toml" <<EOF

# No route sends here: only its resolution runs, each changed answer rebuilding
# this upstream and swapping the snapshot the requests read.
[upstream.pool]
max_servers = $POOL_SIZE
servers = [{ addr = "$POOL_NAME:$TARGET_PORT", resolve = true }]
EOF
    if [ "$POOL_ROUTE" = 1 ]; then
        cat >>"$TMP/on.toml" <<EOF

# POOL_ROUTE=1: a route to the pool, never requested, so each rebuild also makes
# the per-route handles of its servers.
[[route]]
path = "/pool/"
upstream = "pool"
EOF
    fi
    for c in off on; do
        "$SY" check --config "$TMP/$c.toml" >"$TMP/check-$c.txt" 2>&1 \
            || die "switchyard rejected $TMP/$c.toml: $(cat "$TMP/check-$c.txt")"
    done
    LIVE_CFG=$TMP/switchyard.toml
    cp "$TMP/off.toml" "$LIVE_CFG"
    log "starting switchyard on $SY_PORT (admin $ADMIN_PORT)"
    RUST_LOG=warn launch sy "$SY_PORT" "$SY" run --no-watch --config "$LIVE_CFG"
    wait_port "$ADMIN_PORT" "switchyard's admin listener" "${PID[sy]}" "$TMP/sy.log"
    MODE=off

    # switch_to MODE: reloads into MODE's configuration and waits until it is in
    # force: the pool fully discovered (on) or gone (off); then SETTLE seconds.
    switch_to() {
        local reply i n
        [ "$1" != "$MODE" ] || return 0
        cp "$TMP/$1.toml" "$LIVE_CFG"
        reply=$(curl -sS -XPOST "http://127.0.0.1:$ADMIN_PORT/config/reload")
        grep -Eq '"reloaded": *true' <<<"$reply" || die "reload to $1 failed: $reply"
        for i in $(seq 200); do
            n=$(server_addrs "$ADMIN_PORT" pool | wc -l)
            if [ "$1" = on ] && [ "$n" -eq "$POOL_SIZE" ]; then break; fi
            if [ "$1" = off ] && [ "$n" -eq 0 ]; then break; fi
            [ "$i" -lt 200 ] || die "after the reload to $1, pool has $n servers (see $TMP/sy.log, $DNS_LOG)"
            sleep 0.1
        done
        MODE=$1
        sleep "$SETTLE"
    }

    code=$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$SY_PORT$SCENARIO")
    [ "$code" = 200 ] || die "GET $SCENARIO answered $code"
    switch_to on
    before=$(server_addrs "$ADMIN_PORT" pool); sleep 2.5; after=$(server_addrs "$ADMIN_PORT" pool)
    moved=$(comm -13 <(echo "$before") <(echo "$after") | wc -l)
    [ "$moved" -ge 1 ] || die "the pool's servers did not change in 2.5 s; is the DNS answer rotating? (see $DNS_LOG)"
    log "discovery on: $POOL_SIZE servers in pool, $moved changed in 2.5 s"

    run_wrk() { # DURATION OUT
        ${PIN_WRK[@]+"${PIN_WRK[@]}"} wrk -t"$THREADS" -c"$CONNECTIONS" -d"$1" --latency \
            "http://127.0.0.1:$SY_PORT$SCENARIO" >"$2" 2>&1 || { cat "$2" >&2; die "wrk failed"; }
    }
    wrk_errors() { grep -E 'Non-2xx|Socket errors' "$1" | sed 's/^ *//' | tr '\n' ';' || true; }
    # wrk's CPU once it has exited: cutime+cstime of this shell (as run.sh).
    reaped_ticks() {
        local stat f
        stat=$(cat "/proc/$$/stat")
        read -r -a f <<<"${stat##*) }"
        echo $((f[13] + f[14]))
    }
    per_req() { awk -v t="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN {printf "%.2f", t * 1e6 / hz / n}'; }
    ok_count() { metric_sum "$ADMIN_PORT" switchyard_dns_resolutions_total 'upstream="pool"' 'result="ok"'; }
    # background_ns: the CPU time of the proxy's background thread (where the
    # lookups and the rebuilds run), in ns, from the scheduler's own account
    # (/proc/.../schedstat), which unlike the 10 ms ticks resolves the few ms a
    # run costs it.
    background_ns() {
        local t
        for t in /proc/"${PID[sy]}"/task/*; do
            if [ "$(cat "$t/comm" 2>/dev/null)" = switchyard-back ]; then
                awk '{print $1}' "$t/schedstat"
                return
            fi
        done
        die "no switchyard-background thread in switchyard (pid ${PID[sy]})"
    }

    FAILED=0
    log "warm-up: $WARMUP per configuration"
    for m in off on; do
        switch_to "$m"
        run_wrk "$WARMUP" "$TMP/warmup-$m.txt"
        err=$(wrk_errors "$TMP/warmup-$m.txt")
        [ -z "$err" ] || { echo "  $m warm-up: $err" >&2; FAILED=1; }
    done

    CSV_REQ=${CSV%.csv}-requests.csv
    echo "round,mode,scenario,threads,connections,duration,requests,rps,p50_us,p99_us,cpu_ticks,cpu_us_per_req,user_us_per_req,sys_us_per_req,rss_kib,others_cpu_pct,non2xx,socket_errors,resolutions_ok,servers_changed,background_cpu_ms" >"$CSV_REQ"
    log "measuring: $ROUNDS rounds × off/on, wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency $SCENARIO"
    for round in $(seq "$ROUNDS"); do
        # off on, on off, ...: neither configuration always runs first.
        if [ $((round % 2)) = 1 ]; then order=(off on); else order=(on off); fi
        for m in "${order[@]}"; do
            switch_to "$m"
            out=$TMP/round$round-$m.txt
            ok0=$(ok_count); before=$(server_addrs "$ADMIN_PORT" pool); bg0=$(background_ns)
            read -r user0 sys0 < <(user_sys_ticks "${PID[sy]}"); all0=$(ticks_of own "$(with_children "${STARTED[@]}")"); wrk0=$(reaped_ticks)
            read -r busy0 total0 < <(machine_ticks)
            run_wrk "$DURATION" "$out"
            read -r busy1 total1 < <(machine_ticks)
            read -r user1 sys1 < <(user_sys_ticks "${PID[sy]}"); all1=$(ticks_of own "$(with_children "${STARTED[@]}")"); wrk1=$(reaped_ticks)
            rss=$(rss_of "${PID[sy]}" VmRSS); bg1=$(background_ns)
            bg_ms=$(awk -v a="$bg0" -v b="$bg1" 'BEGIN {printf "%.1f", (b - a) / 1e6}')
            ok1=$(ok_count); after=$(server_addrs "$ADMIN_PORT" pool)
            others=$(( (busy1 - busy0) - (all1 - all0) - (wrk1 - wrk0) ))
            others_pct=$(( (others > 0 ? others : 0) * 100 / (total1 - total0) ))
            changed=0
            [ -z "$after" ] || changed=$(comm -13 <(echo "$before") <(echo "$after") | wc -l)

            requests=$(awk '/requests in/ {print $1; exit}' "$out")
            rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
            p50=$(to_us "$(awk '$1 == "50%" {print $2}' "$out")")
            p99=$(to_us "$(awk '$1 == "99%" {print $2}' "$out")")
            if ! { [ -n "$requests" ] && [ -n "$rps" ] && [ "$requests" -gt 0 ]; }; then
                cat "$out" >&2
                die "could not parse wrk output ($m, round $round)"
            fi
            user=$((user1 - user0)); sys=$((sys1 - sys0)); ticks=$((user + sys))
            non2xx=$(awk -F': *' '/Non-2xx/ {print $2}' "$out")
            sockerr=$(sed -n 's/^ *Socket errors: //p' "$out" | tr -d ',')
            echo "$round,$m,$SCENARIO,$THREADS,$CONNECTIONS,$DURATION,$requests,$rps,$p50,$p99,$ticks,$(per_req "$ticks" "$requests"),$(per_req "$user" "$requests"),$(per_req "$sys" "$requests"),$rss,$others_pct,${non2xx:-0},$sockerr,$((ok1 - ok0)),$changed,$bg_ms" >>"$CSV_REQ"
            printf '  round %d %-3s %8.0f req/s  p50 %5d us  p99 %6d us  cpu %6.2f us/req (user %6.2f sys %6.2f)  rss %5.1f MiB  resolutions %3d  changed %3d  background %5.1f ms  others %2d%%\n' \
                "$round" "$m" "$rps" "$p50" "$p99" "$(per_req "$ticks" "$requests")" "$(per_req "$user" "$requests")" \
                "$(per_req "$sys" "$requests")" "$(awk -v k="$rss" 'BEGIN {print k / 1024}')" $((ok1 - ok0)) "$changed" "$bg_ms" "$others_pct" >&2
            err=$(wrk_errors "$out")
            if [ -n "$err" ]; then echo "  !! $m round $round: $err" >&2; FAILED=1; fi
            if [ "$m" = on ] && [ "$changed" -eq 0 ]; then
                echo "  !! on round $round: the pool did not change during the run" >&2; FAILED=1
            fi
        done
    done
    if [ "$POOL_ROUTE" = 1 ]; then
        # Servers with request counters, against the servers the pool has: the
        # counters of addresses that left, if they are kept, outnumber them.
        counted=$(curl -sS "http://127.0.0.1:$ADMIN_PORT/metrics" | grep '^switchyard_requests_total{' | grep 'upstream="pool"' \
            | grep -o 'server="[^"]*"' | sort -u | wc -l)
        log "POOL_ROUTE=1: switchyard_requests_total has series for $counted pool servers at the end; the pool has $POOL_SIZE"
    fi

    echo
    echo "Discovery and the request path — GET $SCENARIO, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, median of $ROUNDS interleaved rounds, $(nproc) CPUs, PIN=$PIN"
    echo "on: $POOL_SIZE addresses re-resolved every second, one address changed in each answer (upstream rebuilt, snapshot swapped)"
    awk -F, '
        function median(s,    n, i, j, t, a) {
            n = split(s, a, " ")
            for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
            return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        NR > 1 {
            m = $2; r = $1; rounds[r] = 1
            v[m, "rps"] = v[m, "rps"] " " $8; v[m, "p50"] = v[m, "p50"] " " $9; v[m, "p99"] = v[m, "p99"] " " $10
            v[m, "cpu"] = v[m, "cpu"] " " $12; v[m, "user"] = v[m, "user"] " " $13; v[m, "sys"] = v[m, "sys"] " " $14
            v[m, "rss"] = v[m, "rss"] " " $15; v[m, "ok"] = v[m, "ok"] " " $19; v[m, "chg"] = v[m, "chg"] " " $20
            v[m, "bg"] = v[m, "bg"] " " $21
            at[r, m, "rps"] = $8; at[r, m, "p50"] = $9; at[r, m, "p99"] = $10; at[r, m, "cpu"] = $12
            at[r, m, "user"] = $13; at[r, m, "sys"] = $14
        }
        END {
            printf "  %-5s %9s %8s %8s %11s %12s %11s %8s %12s %8s %14s\n", "mode", "req/s", "p50 us", "p99 us", "CPU us/req", "user us/req", "sys us/req", "RSS MiB", "resolutions", "changed", "background ms"
            split("off on", modes, " ")
            for (i = 1; i <= 2; i++) {
                m = modes[i]
                for (k in v) { split(k, kk, SUBSEP); if (kk[1] == m) med[m, kk[2]] = median(v[k]) }
                printf "  %-5s %9.0f %8.0f %8.0f %11.2f %12.2f %11.2f %8.1f %12.0f %8.0f %14.1f\n", m, med[m, "rps"], med[m, "p50"], med[m, "p99"], \
                    med[m, "cpu"], med[m, "user"], med[m, "sys"], med[m, "rss"] / 1024, med[m, "ok"], med[m, "chg"], med[m, "bg"]
            }
            printf "\n  on / off    %10s   %s\n", "of medians", "per round"
            split("rps p50 p99 cpu user sys", keys, " "); split("req/s p50 p99 CPU/req user/req sys/req", labels, " ")
            for (i = 1; i <= 6; i++) {
                k = keys[i]; lo = ""; hi = ""
                for (r in rounds) {
                    if (!((r, "off", k) in at) || !((r, "on", k) in at) || at[r, "off", k] <= 0) continue
                    x = at[r, "on", k] / at[r, "off", k]
                    if (lo == "" || x < lo) lo = x
                    if (hi == "" || x > hi) hi = x
                }
                printf "  %-10s %10.3f   %s\n", labels[i], (med["off", k] > 0 ? med["on", k] / med["off", k] : 0), \
                    (lo == "" ? "-" : sprintf("%.3f .. %.3f", lo, hi))
            }
        }' "$CSV_REQ"
    echo "raw results: ${CSV_REQ#"$ROOT"/}"
    stop "${PID[sy]}"
fi

# ============================================================== part: memory
if [ "$MEMORY" = 1 ]; then
    # mem_config VARIANT KIND: the file of one memory process. KIND full: names
    # mem-1..NAMES, PER_NAME addresses each; none: none-1..NAMES, no address.
    mem_config() {
        local out=$TMP/mem-$1-$2.toml k prefix=mem
        [ "$2" = full ] || prefix=none
        {
            echo "[admin]"
            echo "listen = \"127.0.0.1:$MEM_ADMIN_PORT\""
            echo
            echo "[resolver]"
            echo "servers = [\"127.0.0.1:$DNS_PORT\"]"
            echo
            echo "[[listener]]"
            echo "name = \"bench\""
            echo "listen = \"127.0.0.1:$MEM_PORT\""
            echo
            echo "[[route]]"
            echo "path = \"/\""
            if [ "$1" = routed ]; then echo "upstream = \"mem\""; else echo "respond = { status = 200 }"; fi
            echo
            echo "[upstream.mem]"
            echo "max_servers = $SERVERS"
            [ -z "$MEM_KEEPALIVE" ] || echo "keepalive = $MEM_KEEPALIVE"
            echo "servers = ["
            for k in $(seq "$NAMES"); do
                echo "  { addr = \"$prefix-$k.bench.test:$TARGET_PORT\", resolve = true },"
            done
            echo "]"
        } >"$out"
        "$SY" check --config "$out" >/dev/null 2>&1 || die "switchyard rejected $out"
    }
    for variant in routed unrouted; do
        for kind in none full; do mem_config "$variant" "$kind"; done
    done

    # answered FROM_LINE KIND: whether the DNS log, after line FROM_LINE, has a
    # complete A answer (not truncated) for each of KIND's names.
    answered() {
        local prefix=mem
        [ "$2" = full ] || prefix=none
        tail -n +"$(($1 + 1))" "$DNS_LOG" | awk -v p="$prefix" -v n="$NAMES" '
            $4 == "A" && $6 != "truncated" && index($3, p "-") == 1 { seen[$3] = 1 }
            END { c = 0; for (k in seen) c++; exit !(c == n) }'
    }

    # mem_measure VARIANT KIND: starts a process, waits until every name had
    # its answer and the RSS has held still for 2 s, and sets MEM_RSS and
    # MEM_HWM (KiB), and MEM_CPU: the CPU time it had used by then (start-up,
    # the lookups, and the rebuilds of the upstream as each name's answer
    # arrived), in ms. Not called in a subshell: the process must be tracked, and
    # a `die` must end the script.
    # Nothing is asked of its admin API before the reading: /metrics and the
    # status and upstream lists render every server (10 MB of text for 10 000),
    # which would itself grow the heap being measured. The counts are checked
    # after the reading.
    mem_measure() {
        local name=mem-$1-$2 from rss last=0 steady=0 hwm cpu want=0 got listed t0
        [ "$2" = none ] || want=$SERVERS
        from=$(wc -l <"$DNS_LOG")
        t0=$(date +%s)
        RUST_LOG=warn launch "$name" "$MEM_PORT" "$SY" run --no-watch --config "$TMP/$name.toml"
        until answered "$from" "$2"; do
            [ $(($(date +%s) - t0)) -lt "$MEM_TIMEOUT" ] || die "$name: no answer for every name within $MEM_TIMEOUT s (see $DNS_LOG)"
            sleep 0.2
        done
        while [ "$steady" -lt 4 ]; do
            [ $(($(date +%s) - t0)) -lt "$MEM_TIMEOUT" ] || die "$name: RSS still moving after $MEM_TIMEOUT s"
            sleep 0.5
            rss=$(rss_of "${PID[$name]}" VmRSS)
            if [ "$rss" = "$last" ]; then steady=$((steady + 1)); else steady=0; last=$rss; fi
        done
        hwm=$(rss_of "${PID[$name]}" VmHWM)
        cpu=$(( $(ticks_of own "${PID[$name]}") * 1000 / CLK_TCK ))
        got=$(metric_sum "$MEM_ADMIN_PORT" switchyard_dns_servers 'upstream="mem"')
        listed=$(server_addrs "$MEM_ADMIN_PORT" mem | wc -l)
        stop "${PID[$name]}"
        if [ "$got" != "$want" ] || [ "$listed" != "$want" ]; then
            die "$name: RSS was read with switchyard_dns_servers = $got and $listed servers listed, not $want (raise MEM_TIMEOUT?)"
        fi
        MEM_RSS=$rss
        MEM_HWM=$hwm
        MEM_CPU=$cpu
    }

    CSV_MEM=${CSV%.csv}-memory.csv
    echo "round,variant,kind,servers,rss_kib,hwm_kib,cpu_ms" >"$CSV_MEM"
    log "memory: $MEM_ROUNDS rounds × routed/unrouted × none/full ($NAMES names × $PER_NAME addresses)"
    for round in $(seq "$MEM_ROUNDS"); do
        for variant in routed unrouted; do
            for kind in none full; do
                mem_measure "$variant" "$kind"
                rss=$MEM_RSS; hwm=$MEM_HWM
                n=0; [ "$kind" = none ] || n=$SERVERS
                echo "$round,$variant,$kind,$n,$rss,$hwm,$MEM_CPU" >>"$CSV_MEM"
                printf '  round %d %-8s %-4s %6d servers  RSS %8.1f MiB  peak %8.1f MiB  CPU %6d ms\n' "$round" "$variant" "$kind" "$n" \
                    "$(awk -v k="$rss" 'BEGIN {print k / 1024}')" "$(awk -v k="$hwm" 'BEGIN {print k / 1024}')" "$MEM_CPU" >&2
            done
        done
    done

    echo
    echo "Memory of $SERVERS discovered servers ($NAMES names × $PER_NAME addresses, one upstream, keepalive ${MEM_KEEPALIVE:-default}), median of $MEM_ROUNDS processes, $(nproc) CPUs (workers)"
    awk -F, -v servers="$SERVERS" '
        function median(s,    n, i, j, t, a) {
            n = split(s, a, " ")
            for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
            return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        NR > 1 {
            rss[$2, $3] = rss[$2, $3] " " $5; hwm[$2, $3] = hwm[$2, $3] " " $6; cpu[$2, $3] = cpu[$2, $3] " " $7
            if (!($2 in seen)) { seen[$2] = 1; order[++n] = $2 }
        }
        END {
            printf "  %-9s %13s %13s %15s %13s %14s %13s %13s\n", "variant", "none RSS MiB", "full RSS MiB", "difference MiB", "bytes/server", "full peak MiB", "none CPU ms", "full CPU ms"
            for (i = 1; i <= n; i++) {
                v = order[i]; a = median(rss[v, "none"]); b = median(rss[v, "full"])
                printf "  %-9s %13.1f %13.1f %15.1f %13.0f %14.1f %13.0f %13.0f\n", v, a / 1024, b / 1024, (b - a) / 1024, \
                    (b - a) * 1024 / servers, median(hwm[v, "full"]) / 1024, median(cpu[v, "none"]), median(cpu[v, "full"])
            }
        }' "$CSV_MEM"
    echo "raw results: ${CSV_MEM#"$ROOT"/}"
fi

[ "${FAILED:-0}" = 0 ] || { echo "$PROG: some runs had errors (above)" >&2; exit 1; }
