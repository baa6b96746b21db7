#!/usr/bin/env bash
# Soak test (not run by CI). Switchyard runs in front of three sample origins and
# a WebSocket echo server for DURATION seconds (10 minutes by default) of mixed
# load. Meanwhile its configuration is reloaded every RELOAD_EVERY seconds (the
# file is rewritten, then POST /config/reload), and every minute one origin is
# killed (SIGKILL) at +KILL_AT s and restarted KILL_FOR s later, in turn.
#
# The load runs all at once:
#   - wrk on KA_CONNECTIONS keep-alive connections;
#   - wrk on CLOSE_CONNECTIONS with `Connection: close` (a new connection for
#     every request);
#   - STREAMS curl loops of streamed chunked responses (/?chunks=&interval=);
#   - WS_CONNECTIONS WebSocket clients that echo a message every 100 ms for
#     sessions of WS_SESSION s (benches/soak_ws.py: python3, standard library
#     only; skipped, with a note, without python3).
#
# Every minute the script prints the proxy's RSS (VmRSS), its open file
# descriptors (/proc/PID/fd, sampled 5 s before the minute ends, under load) and
# that minute's errors: wrk's non-2xx and socket errors, failed streams,
# WebSocket sessions and reloads, and the 5xx that the proxy counted
# (switchyard_requests_total{code_class="5xx"} on /metrics). At the end it says
# whether RSS and descriptors stayed flat: the last two minutes against minutes
# 2-3 (minute 1 is warm-up), within RSS_TOLERANCE percent (and at least 4 MiB)
# and FD_TOLERANCE descriptors. It also splits the errors into those of the
# SLOT-second slots while an origin was down (from its kill to RECOVERY s after
# its restart) and the others, which should be none. It exits 1 if RSS or
# descriptors grew or if an error was not explained by a kill. Linux only
# (reads /proc); run as root or with sudo when wrk still needs installing.
#
#   benches/soak.sh                        # 10 minutes
#   DURATION=180 benches/soak.sh           # 3 minutes
#   BUILD=0 KEEP_TMP=1 benches/soak.sh     # target/release/switchyard as it is; keep the logs
#
# Knobs (environment): DURATION SLOT RELOAD_EVERY KILL_AT KILL_FOR RECOVERY
# KA_CONNECTIONS CLOSE_CONNECTIONS LOAD_PATH STREAMS STREAM_CHUNKS
# STREAM_INTERVAL WS_CONNECTIONS WS_SESSION RSS_TOLERANCE FD_TOLERANCE BUILD
# SY_PORT ADMIN_PORT WS_PORT ORIGIN_PORTS KEEP_TMP.
set -euo pipefail
export LC_ALL=C # the decimal point in $EPOCHREALTIME and awk's output

DURATION=${DURATION:-600}          # seconds; a whole number of minutes
SLOT=${SLOT:-10}                   # seconds per wrk run and per error-attribution slot
RELOAD_EVERY=${RELOAD_EVERY:-5}    # seconds between two reloads
KILL_AT=${KILL_AT:-20}             # seconds into each minute, an origin is killed
KILL_FOR=${KILL_FOR:-10}           # seconds it stays down
RECOVERY=${RECOVERY:-10}           # seconds after the restart still blamed on the kill
KA_CONNECTIONS=${KA_CONNECTIONS:-16}      # wrk keep-alive connections
CLOSE_CONNECTIONS=${CLOSE_CONNECTIONS:-4} # wrk connections with Connection: close
# The origin's delay caps wrk's rate (connections / delay), so the soak leaves CPU
# to the rest of the machine; it is about staying flat, not about req/s.
LOAD_PATH=${LOAD_PATH:-"/?delay=5ms"}
STREAMS=${STREAMS:-2}              # curl loops of streamed responses
STREAM_CHUNKS=${STREAM_CHUNKS:-20} # chunks per streamed response
STREAM_INTERVAL=${STREAM_INTERVAL:-50ms} # pause between two chunks
WS_CONNECTIONS=${WS_CONNECTIONS:-4} # WebSocket clients (0: none)
WS_SESSION=${WS_SESSION:-10}       # seconds per WebSocket session (then close, reconnect)
RSS_TOLERANCE=${RSS_TOLERANCE:-20} # percent
FD_TOLERANCE=${FD_TOLERANCE:-16}   # descriptors
BUILD=${BUILD:-1}                  # 0: use target/release/switchyard as it is
SY_PORT=${SY_PORT:-18140}
ADMIN_PORT=${ADMIN_PORT:-18141}
WS_PORT=${WS_PORT:-19144}
ORIGIN_PORTS=${ORIGIN_PORTS:-"19141 19142 19143"}
KEEP_TMP=${KEEP_TMP:-0}            # 1: keep the temp dir (configs, logs, wrk output)

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PROG=soak
# Read by common.sh's pin_setup; the soak pins nothing.
PIN=0
# shellcheck source=benches/compare/common.sh
. "$HERE/compare/common.sh"
help_or_no_args "$@"
read -r -a ORIGINS <<<"$ORIGIN_PORTS"

# ------------------------------------------------------------------ arguments
is_int() { [[ $1 =~ ^[0-9]+$ ]]; }
for v in DURATION SLOT RELOAD_EVERY KILL_AT KILL_FOR RECOVERY KA_CONNECTIONS CLOSE_CONNECTIONS \
    STREAMS STREAM_CHUNKS WS_CONNECTIONS WS_SESSION RSS_TOLERANCE FD_TOLERANCE; do
    is_int "${!v}" || die "$v must be a whole number: ${!v}"
done
[ ${#ORIGINS[@]} -eq 3 ] || die "ORIGIN_PORTS needs three ports: $ORIGIN_PORTS"
if [ "$DURATION" -lt 60 ] || [ $((DURATION % 60)) -ne 0 ]; then
    die "DURATION must be a whole number of minutes, in seconds: $DURATION"
fi
if [ "$SLOT" -eq 0 ] || [ $((60 % SLOT)) -ne 0 ]; then die "SLOT must divide 60: $SLOT"; fi
[ "$RELOAD_EVERY" -gt 0 ] || die "RELOAD_EVERY must be at least 1"
[ $((KILL_AT + KILL_FOR)) -lt 55 ] || die "KILL_AT + KILL_FOR must end before the sample at +55 s"
case $LOAD_PATH in /*) ;; *) die "LOAD_PATH must start with /: $LOAD_PATH" ;; esac
MINUTES=$((DURATION / 60))
SAMPLE_AT=55 # seconds into each minute: RSS and descriptors, under load

# ---------------------------------------------------------------- tools, build
install_missing wrk
require ss curl awk
WS=1
if [ "$WS_CONNECTIONS" -eq 0 ]; then
    WS=0; WS_NOTE="WebSocket load off (WS_CONNECTIONS=0)"
elif ! command -v python3 >/dev/null; then
    WS=0; WS_NOTE="WebSocket load skipped: no python3 for benches/soak_ws.py"
fi
[ "$BUILD" != 1 ] || build_switchyard
[ -x "$ROOT/target/release/switchyard" ] || die "no $ROOT/target/release/switchyard; run with BUILD=1"
check_ports SY_PORT/ADMIN_PORT/WS_PORT/ORIGIN_PORTS "$SY_PORT" "$ADMIN_PORT" "$WS_PORT" "${ORIGINS[@]}"
warn_if_busy "the soak starts (fine: a soak measures growth and errors, not speed)"
make_workdir soak
copy_switchyard "$TMP/bin"

# ------------------------------------------------------------------- config
# write_config VARIANT: the live file, written whole then renamed over. The two
# variants differ in origin 1's weight, so every reload changes the upstream.
write_config() {
    local w1=1
    [ "$1" = b ] && w1=2
    cat >"$TMP/live/switchyard.toml.tmp" <<EOF
# benches/soak.sh, variant $1
[[listener]]
name = "soak"
listen = "127.0.0.1:$SY_PORT"

[admin]
listen = "127.0.0.1:$ADMIN_PORT"

[[route]]
path = "/ws"
upstream = "ws"

[[route]]
path = "/"
upstream = "origins"
# As failover.sh: a connect error, a reset, a timeout or a 502 moves an
# idempotent request to another origin.
next_upstream = ["error", "timeout", "http_502"]

[upstream.origins]
balance = "round_robin"
keepalive = 32
servers = [
  { addr = "127.0.0.1:${ORIGINS[0]}", weight = $w1 },
  { addr = "127.0.0.1:${ORIGINS[1]}" },
  { addr = "127.0.0.1:${ORIGINS[2]}" },
]

[upstream.origins.health_check]
path = "/health"
interval = "1s"
timeout = "1s"
fall = 2
rise = 2

[upstream.ws]
servers = [{ addr = "127.0.0.1:$WS_PORT" }]
EOF
    mv "$TMP/live/switchyard.toml.tmp" "$TMP/live/switchyard.toml"
}
mkdir -p "$TMP/live"
write_config a
"$SY" check --config "$TMP/live/switchyard.toml" >/dev/null 2>"$TMP/check.log" ||
    die "switchyard rejected its configuration: $(cat "$TMP/check.log")"

# ------------------------------------------------------------ the processes
declare -a OPID=()
start_origin() { # N (1..3)
    local p=${ORIGINS[$1 - 1]}
    start "OPID[$1]" "origin$1" "$p" "$TMP/origin$1.log" \
        "$SY" origin --listen "127.0.0.1:$p" --name "origin$1"
}
kill_origin() { # N: SIGKILL, reaped, never signalled again
    local pid=${OPID[$1]}
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "LIVE[$pid]" "OPID[$1]"
}
log "starting origins on $ORIGIN_PORTS"
for i in 1 2 3; do start_origin "$i"; done
if [ "$WS" = 1 ]; then
    start WS_PID ws-echo "$WS_PORT" "$TMP/ws-echo.log" python3 "$HERE/soak_ws.py" server "$WS_PORT"
fi
log "starting switchyard on :$SY_PORT (admin :$ADMIN_PORT)"
# --no-watch: each reload is the one POST below, not also the file watch's.
RUST_LOG=${RUST_LOG:-warn} start SY_PID switchyard "$SY_PORT" "$TMP/switchyard.log" \
    "$SY" run --config "$TMP/live/switchyard.toml" --no-watch
wait_port "$ADMIN_PORT" "switchyard admin" "$SY_PID" "$TMP/switchyard.log"

URL=http://127.0.0.1:$SY_PORT
ADMIN=http://127.0.0.1:$ADMIN_PORT
# Every origin must answer before the clock starts (health checks pass first).
for _ in $(seq 100); do
    got=$(curl -sS -m 2 -D - -o /dev/null "$URL/" -o /dev/null "$URL/" -o /dev/null "$URL/" 2>/dev/null | x_origins | sort -u | wc -l)
    [ "$got" -eq 3 ] && break
    sleep 0.1
done
[ "$got" -eq 3 ] || die "switchyard does not reach the three origins; see $TMP/switchyard.log"

# ---------------------------------------------------------------- the load
STREAM_URL="$URL/?chunks=$STREAM_CHUNKS&interval=$STREAM_INTERVAL"
stream_loop() {
    local out n
    while :; do
        if out=$(curl -sS -m 30 "$STREAM_URL" 2>&1); then
            n=$(grep -c '^chunk ' <<<"$out" || true)
            if [ "$n" -eq "$STREAM_CHUNKS" ]; then
                echo "$EPOCHSECONDS ok"
            else
                echo "$EPOCHSECONDS fail $n of $STREAM_CHUNKS chunks"
            fi
        else
            echo "$EPOCHSECONDS fail $(head -c 120 <<<"$out" | tr '\n' ' ')"
        fi
    done >>"$TMP/streams.log"
}
: >"$TMP/streams.log"
: >"$TMP/ws.log"
: >"$TMP/reloads.log"
log "load: wrk -c$KA_CONNECTIONS keep-alive and -c$CLOSE_CONNECTIONS Connection: close on $LOAD_PATH; $STREAMS stream loops; $([ "$WS" = 1 ] && echo "$WS_CONNECTIONS WebSocket clients" || echo "$WS_NOTE")"
for _ in $(seq "$STREAMS"); do
    stream_loop &
    track $!
done
if [ "$WS" = 1 ]; then
    python3 "$HERE/soak_ws.py" client "127.0.0.1:$SY_PORT" /ws "$WS_CONNECTIONS" "$WS_SESSION" "$TMP/ws.log" \
        >"$TMP/ws-client.log" 2>&1 &
    track $!
fi

# ------------------------------------------------------------- measurements
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$SY_PID/status"; }
fd_count() { find "/proc/$SY_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
# The proxy's answered requests with a 5xx status, since it started (the last
# count again when /metrics does not answer).
count_5xx() {
    local m
    m=$(curl -sS -m 5 "$ADMIN/metrics" 2>/dev/null) || { echo "$prev_5xx"; return; }
    awk '/^switchyard_requests_total/ && /code_class="5xx"/ {n += $NF} END {printf "%d\n", n}' <<<"$m"
}
# "requests non2xx socket_errors" of a wrk output.
wrk_counts() {
    awk '/requests in/ { req = $1 }
        /Non-2xx or 3xx responses:/ { non = $NF }
        /Socket errors:/ { gsub(/,/, ""); sock = $4 + $6 + $8 + $10 }
        END { printf "%d %d %d\n", req, non, sock }' "$1"
}
# "ok fail" lines of LOG with a time in [FROM, TO).
count_log() { # log from to
    awk -v a="$2" -v b="$3" '$1 >= a && $1 < b { if ($2 == "ok") ok++; else fail++ }
        END { printf "%d %d\n", ok, fail }' "$1"
}

reload() {
    local variant=$1 code
    write_config "$variant"
    code=$(curl -sS -m 10 -o "$TMP/reload-answer.json" -w '%{http_code}' -X POST "$ADMIN/config/reload" 2>/dev/null || echo 000)
    if [ "$code" = 200 ]; then
        echo "$EPOCHSECONDS ok" >>"$TMP/reloads.log"
    else
        echo "$EPOCHSECONDS fail $code $(head -c 200 "$TMP/reload-answer.json" 2>/dev/null | tr '\n' ' ')" >>"$TMP/reloads.log"
    fi
}

# ------------------------------------------------------------------ the run
# Seconds since T0 (whole), and sleeping until T0 + S.
T0=$EPOCHSECONDS
sleep_to() { # S
    local d
    d=$(awk -v t="$((T0 + $1))" -v n="$EPOCHREALTIME" 'BEGIN {d = t - n; printf "%.3f", (d > 0 ? d : 0)}')
    sleep "$d"
}

echo "slot_start_s,minute,ka_requests,ka_non2xx,ka_socket,close_requests,close_non2xx,close_socket,streams_ok,streams_failed,ws_ok,ws_failed,reloads_ok,reloads_failed,proxy_5xx,origin_down" >"$CSV"
declare -a RSS=() FDS=() EVENT=()
variant=a
prev_5xx=0
prev_5xx=$(count_5xx)
log "soak: $MINUTES min; reload every ${RELOAD_EVERY}s; an origin killed at +${KILL_AT}s of every minute for ${KILL_FOR}s"
printf '\n%-4s %8s %5s %11s %12s %14s %12s %9s %7s %8s  %s\n' \
    min "RSS MiB" fds "ka req/err" "close req/err" "streams ok/err" "ws ok/err" "5xx" reloads "r. fail" "origin killed"
for ((slot = 0; slot < DURATION; slot += SLOT)); do
    sleep_to "$slot"
    wrk -t1 -c"$KA_CONNECTIONS" -d"${SLOT}s" "$URL$LOAD_PATH" >"$TMP/wrk-ka-$slot.txt" 2>&1 &
    ka=$!; track $ka
    wrk -t1 -c"$CLOSE_CONNECTIONS" -d"${SLOT}s" -H "Connection: close" "$URL$LOAD_PATH" >"$TMP/wrk-close-$slot.txt" 2>&1 &
    cl=$!; track $cl
    for ((s = slot; s < slot + SLOT; s++)); do
        sleep_to "$s"
        minute=$((s / 60)); in_minute=$((s % 60)); victim=$((minute % 3 + 1))
        if [ "$in_minute" -eq "$KILL_AT" ]; then
            kill_origin "$victim"
            EVENT[minute]="origin$victim +${KILL_AT}s..+$((KILL_AT + KILL_FOR))s"
        elif [ "$in_minute" -eq $((KILL_AT + KILL_FOR)) ]; then
            start_origin "$victim"
        fi
        if [ "$s" -gt 0 ] && [ $((s % RELOAD_EVERY)) -eq 0 ]; then
            [ "$variant" = a ] && variant=b || variant=a
            reload "$variant"
        fi
        if [ "$in_minute" -eq "$SAMPLE_AT" ]; then
            RSS[minute]=$(rss_kib)
            FDS[minute]=$(fd_count)
        fi
    done
    wait "$ka" || true; unset "LIVE[$ka]"
    wait "$cl" || true; unset "LIVE[$cl]"

    # The slot's counts.
    read -r kar kan kas < <(wrk_counts "$TMP/wrk-ka-$slot.txt")
    read -r clr cln cls < <(wrk_counts "$TMP/wrk-close-$slot.txt")
    from=$((T0 + slot)); to=$((T0 + slot + SLOT))
    read -r sok sfail < <(count_log "$TMP/streams.log" "$from" "$to")
    read -r wok wfail < <(count_log "$TMP/ws.log" "$from" "$to")
    read -r rok rfail < <(count_log "$TMP/reloads.log" "$from" "$to")
    now_5xx=$(count_5xx); p5=$((now_5xx - prev_5xx)); prev_5xx=$now_5xx
    # Down from the kill to RECOVERY s after the restart, within its minute.
    in_min=$((slot % 60)); down=0
    if [ $((in_min + SLOT)) -gt "$KILL_AT" ] && [ "$in_min" -lt $((KILL_AT + KILL_FOR + RECOVERY)) ]; then
        down=$(((slot / 60) % 3 + 1))
    fi
    echo "$slot,$((slot / 60 + 1)),$kar,$kan,$kas,$clr,$cln,$cls,$sok,$sfail,$wok,$wfail,$rok,$rfail,$p5,$down" >>"$CSV"

    # The minute's line.
    if [ $(((slot + SLOT) % 60)) -eq 0 ]; then
        m=$((slot / 60))
        awk -F, -v m=$((m + 1)) -v rss="${RSS[m]:-0}" -v fds="${FDS[m]:-0}" -v ev="${EVENT[m]:--}" '
            NR > 1 && $2 == m {
                kr += $3; ke += $4 + $5; cr += $6; ce += $7 + $8; so += $9; sf += $10
                wo += $11; wf += $12; ro += $13; rf += $14; x += $15
            }
            END {
                printf "%-4d %8.1f %5d %11s %12s %14s %12s %9d %7d %8d  %s\n", m, rss / 1024, fds,
                    kr "/" ke, cr "/" ce, so "/" sf, wo "/" wf, x, ro, rf, ev
            }' "$CSV"
    fi
done

# ------------------------------------------------------------------ verdict
echo
[ "$WS" = 1 ] || echo "note: $WS_NOTE"
# flat NAME UNIT TOLERANCE_KIND VALUES...: the last two minutes against minutes
# 2-3 (1 when the run is shorter): max against max.
verdict=0
flat() {
    local name=$1 kind=$2; shift 2
    awk -v name="$name" -v kind="$kind" -v pct="$RSS_TOLERANCE" -v fdt="$FD_TOLERANCE" '
        BEGIN {
            n = ARGC - 1
            for (i = 1; i <= n; i++) v[i] = ARGV[i] + 0
            ARGC = 1
            a = (n >= 4) ? 2 : 1; b = (n >= 4) ? 3 : 1
            first = (v[a] > v[b]) ? v[a] : v[b]
            last = (v[n] > v[n - 1]) ? v[n] : v[n - 1]
            if (n < 2) last = v[n]
            if (kind == "rss") {
                allow = first * pct / 100; if (allow < 4096) allow = 4096
                ok = (last <= first + allow)
                printf "%-12s minutes %d-%d: %.1f MiB, last two minutes: %.1f MiB, allowed +%.1f MiB: %s\n",
                    name, a, b, first / 1024, last / 1024, allow / 1024, ok ? "flat" : "GREW"
            } else {
                ok = (last <= first + fdt)
                printf "%-12s minutes %d-%d: %d, last two minutes: %d, allowed +%d: %s\n",
                    name, a, b, first, last, fdt, ok ? "flat" : "GREW"
            }
            exit !ok
        }' "$@"
}
echo "RSS by minute (MiB): $(for r in "${RSS[@]}"; do awk -v k="$r" 'BEGIN {printf "%.1f ", k / 1024}'; done)"
echo "fds by minute:       ${FDS[*]}"
flat RSS rss "${RSS[@]}" || verdict=1
flat descriptors fds "${FDS[@]}" || verdict=1

# Errors: in slots while an origin was down (its kill to RECOVERY s after its
# restart), and in the others.
awk -F, -v slot="$SLOT" '
    NR == 1 { next }
    {
        e["wrk keep-alive"] = $4 + $5; e["wrk close"] = $7 + $8; e["streams"] = $10
        e["websocket"] = $12; e["reloads"] = $14; e["proxy 5xx"] = $15
        for (k in e) {
            if ($16 > 0) down[k] += e[k]; else other[k] += e[k]
            if ($16 == 0 && e[k] > 0) where = where sprintf("  minute %d +%ds: %s %d\n", $2, $1 % 60, k, e[k])
        }
        req += $3 + $6; streams += $9 + $10; ws += $11 + $12; reloads += $13 + $14
    }
    END {
        printf "requests: %d by wrk, %d streams, %d WebSocket sessions, %d reloads\n", req, streams, ws, reloads
        printf "errors         %12s %12s\n", "origin down", "otherwise"
        n = split("wrk keep-alive,wrk close,streams,websocket,reloads,proxy 5xx", keys, ",")
        for (i = 1; i <= n; i++) {
            k = keys[i]; printf "  %-14s %10d %12d\n", k, down[k], other[k]; bad += other[k]
        }
        printf "(proxy 5xx are answers the proxy sent; wrk counts them as non-2xx too)\n"
        if (bad) printf "errors outside the minutes of a kill:\n%s", where
        exit bad > 0
    }' "$CSV" || verdict=1
echo "per-slot counts: ${CSV#"$ROOT"/}"
if [ "$verdict" = 0 ]; then
    echo "soak: PASS (RSS and descriptors flat; every error during an origin's kill)"
else
    echo "soak: FAIL (see above; logs in $TMP)"
    KEEP_TMP=1
fi
exit "$verdict"
