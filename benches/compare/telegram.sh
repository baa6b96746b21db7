#!/usr/bin/env bash
# The Telegram mode end to end (issue 15's benchmark): updates/s through a
# telegram route (secret check, chat affinity, dedup in memory) against the same
# updates through a plain proxying route (round-robin), on one Switchyard and the
# same three origins, in interleaved rounds. Target: the mode costs at most 15 %
# of plain proxying's throughput. With REDIS=1 (the default) a third run sends
# them through a telegram route whose dedup store is a redis-server on a Unix
# socket (started by the script). Not run by CI; see README.md next to this
# file. Linux only; run as root or with sudo when wrk/redis-server still need
# installing.
#
#   benches/compare/telegram.sh                   # 3 rounds × 3 runs, about 2 minutes
#   ROUNDS=5 DURATION=20s benches/compare/telegram.sh
#   REDIS=0 BUILD=0 benches/compare/telegram.sh   # memory store only, no cargo
#
# Each round runs, one after the other, with the same wrk settings:
#   plain     POST /plain       plain proxying, round-robin
#   telegram  POST /tg/bench    [route.telegram], affinity = "chat", dedup_store = "memory"
#   tg-redis  POST /tg/redis    the same, dedup_store = "redis+unix://…"   (REDIS=1)
# wrk sends telegram.lua's updates to all three: SIZE-byte messages over CHATS
# chats, each with an update_id never sent before (a repeated one would be
# answered from the dedup store). A separate Switchyard with metrics on checks
# that first: no update deduplicated or coalesced, every one with a key.
#
# Knobs (environment): THREADS CONNECTIONS DURATION WARMUP ROUNDS CHATS SIZE
# REDIS PIN BUILD SY_PORT CHECK_PORT ADMIN_PORT ORIGIN_PORTS KEEP_TMP.
set -euo pipefail
export LC_ALL=C

THREADS=${THREADS:-1}          # wrk threads: 1, the 2 cores are needed elsewhere
CONNECTIONS=${CONNECTIONS:-50} # wrk connections (Telegram's max_connections is 40 by default)
DURATION=${DURATION:-10s}      # one measured run
WARMUP=${WARMUP:-3s}           # one unmeasured run per route before round 1
ROUNDS=${ROUNDS:-3}            # each round runs every route once, in order
CHATS=${CHATS:-1000}           # chats the updates are spread over
SIZE=${SIZE:-1024}             # bytes of one update
REDIS=${REDIS:-1}              # 1: also the telegram route with the Redis store
PIN=${PIN:-0}                  # as run.sh: 0 pins nothing (how results are reported)
BUILD=${BUILD:-1}              # 0: use target/release/switchyard as it is
SY_PORT=${SY_PORT:-18190}      # the measured Switchyard
CHECK_PORT=${CHECK_PORT:-18191} # the checking Switchyard
ADMIN_PORT=${ADMIN_PORT:-18192} # its admin listener (metrics)
ORIGIN_PORTS=${ORIGIN_PORTS:-"19191 19192 19193"}
KEEP_TMP=${KEEP_TMP:-0}        # 1: keep the temp dir (configs, logs, wrk output)

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PROG=telegram
# shellcheck source=benches/compare/common.sh
. "$HERE/common.sh"
help_or_no_args "$@"
[[ $CHATS =~ ^[1-9][0-9]*$ ]] || die "CHATS must be a positive integer: $CHATS"
{ [[ $SIZE =~ ^[0-9]+$ ]] && [ "$SIZE" -ge 512 ]; } || die "SIZE must be an integer ≥ 512 (the update without its text): $SIZE"
case $REDIS in 0|1) ;; *) die "REDIS must be 0 or 1: $REDIS" ;; esac

# The webhook's secret (Telegram's charset); wrk sends it to every route, so the
# plain route forwards the same header bytes.
SECRET=bench-Secret_2026

# ---------------------------------------------------------------- tools, build
tools=(wrk)
[ "$REDIS" = 0 ] || tools+=(redis-server)
install_missing "${tools[@]}"
require ss curl getconf
[ "$BUILD" = 0 ] || build_switchyard
read -r -a ORIGINS <<<"$ORIGIN_PORTS"
[ ${#ORIGINS[@]} -eq 3 ] || die "ORIGIN_PORTS must name three ports: $ORIGIN_PORTS"
check_ports SY_PORT/CHECK_PORT/ADMIN_PORT/ORIGIN_PORTS "$SY_PORT" "$CHECK_PORT" "$ADMIN_PORT" "${ORIGINS[@]}"
warn_if_busy "the benchmark starts; results will be noisy"
make_workdir telegram
FAILED=0
copy_switchyard "$TMP"
pin_setup
declare -A PID=()

# ------------------------------------------------------------ origins, redis
# The sample origin drains a POST's body and answers 200 with a line naming
# itself and the byte count: about 40 bytes, like a bot's `{}` or a short
# sendMessage reply.
start_origins
if [ "$REDIS" = 1 ]; then
    SOCK=$TMP/redis.sock
    log "starting redis-server on $SOCK"
    redis-server --port 0 --unixsocket "$SOCK" --unixsocketperm 700 --save "" \
        --appendonly no --dir "$TMP" >"$TMP/redis.log" 2>&1 &
    track $!
    PID[redis]=$!
    for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
    [ -S "$SOCK" ] || die "redis-server did not open $SOCK; see $TMP/redis.log"
fi

# ------------------------------------------------------------------ proxies
# sy_config NAME PORT: the template filled in (the Redis route cut out with
# REDIS=0); the checking proxy gets an admin listener, hence metrics.
sy_config() {
    local out=$TMP/$1.toml cut=()
    [ "$REDIS" = 1 ] || cut=('/^# --- redis begin/,/^# --- redis end/d')
    render "$HERE/telegram-switchyard.toml.tmpl" "$out" "$TMP" "$2" \
        "s|@SECRET@|$SECRET|g" "s|@REDIS_SOCK@|${SOCK:-}|g" ${cut[@]+"${cut[@]}"}
    [ "$1" != check ] || printf '\n[admin]\nlisten = "127.0.0.1:%d"\n' "$ADMIN_PORT" >>"$out"
    "$SY" check --config "$out" >/dev/null || die "switchyard rejected $out"
    echo "$out"
}
# Written first, not inside the launch lines: a `die` in a command substitution
# there would only end the subshell.
CFG=$(sy_config switchyard "$SY_PORT")
CFG_CHECK=$(sy_config check "$CHECK_PORT")
log "starting switchyard on $SY_PORT"
RUST_LOG=warn launch switchyard "$SY_PORT" "$SY" run --config "$CFG"

# Each run: NAME PATH.
RUNS=("plain /plain" "telegram /tg/bench")
[ "$REDIS" = 0 ] || RUNS+=("tg-redis /tg/redis")

# ------------------------------------------------------------- sanity checks
# update ID CHAT: a short private-chat message.
update() {
    printf '{"update_id":%d,\n"message":{"message_id":1,"from":{"id":%d,"is_bot":false,"first_name":"A"},"chat":{"id":%d,"first_name":"A","type":"private"},"date":1767225600,"text":"hi"}}' \
        "$1" "$2" "$2"
}
# post PORT PATH BODY [CURL ARGS...]: "STATUS BODY" of one POST with the secret.
post() {
    local port=$1 path=$2 body=$3; shift 3
    curl -sS -X POST -H 'Content-Type: application/json' -H "X-Telegram-Bot-Api-Secret-Token: $SECRET" \
        --data-binary "$body" -w ' %{http_code}' "$@" "http://127.0.0.1:$port$path" | tr '\n' ' '
}
log "checking the routes"
heads=$(curl -sS -D - -o /dev/null -X POST --data-binary x "http://127.0.0.1:$SY_PORT/plain" \
    -o /dev/null "http://127.0.0.1:$SY_PORT/plain" -o /dev/null "http://127.0.0.1:$SY_PORT/plain") \
    || die "curl POST /plain failed"
codes=$(awk '/^HTTP\// {print $2}' <<<"$heads" | tr '\n' ' ')
origins=$(x_origins <<<"$heads" | sort -u | tr '\n' ' ')
printf '  %-9s status: %s x-origin: %s\n' plain "$codes" "$origins" >&2
[ "$codes" = "200 200 200 " ] || die "POST /plain: expected three 200s, got: $codes"
[ "$(wc -w <<<"$origins")" -eq 3 ] || die "POST /plain does not rotate over the three origins: $origins"
for r in "${RUNS[@]:1}"; do
    read -r name path <<<"$r"
    got=$(curl -sS -o /dev/null -w '%{http_code}' -X POST --data-binary "$(update 1 1)" "http://127.0.0.1:$SY_PORT$path")
    [ "$got" = 401 ] || die "$name: POST $path without the secret answered $got, not 401"
    # The mode passes the bot's body through: it names the bot. A chat's updates
    # go to one bot, different chats to more than one; a re-sent update_id is
    # answered from the store with the same body.
    declare -A bot=()
    for chat in $(seq 101 112); do
        got=$(post "$SY_PORT" "$path" "$(update "$chat" "$chat")")
        [[ $got == *" 200" ]] || die "$name: POST $path answered: $got"
        bot[$chat]=$(sed -n 's/.*origin: \([^ ]*\) .*/\1/p' <<<"$got")
    done
    for chat in $(seq 101 112); do
        got=$(post "$SY_PORT" "$path" "$(update $((chat + 100)) "$chat")")
        [[ $got == *"origin: ${bot[$chat]} "*" 200" ]] || die "$name: chat $chat went to ${bot[$chat]}, then: $got"
    done
    again=$(post "$SY_PORT" "$path" "$(update 101 101)")
    [[ $again == *"origin: ${bot[101]} "*" 200" ]] || die "$name: the re-send of update 101 got: $again"
    spread=$(printf '%s\n' "${bot[@]}" | sort -u | tr '\n' ' ')
    printf '  %-9s 401 without the secret; 12 chats × 2 updates, each chat on one bot, bots: %s; re-send answered alike\n' \
        "$name" "$spread" >&2
    [ "$(wc -w <<<"$spread")" -ge 2 ] || die "$name: 12 chats all went to one bot: $spread"
    unset bot
done

# ------------------------------------------------------------------ wrk runs
CLK_TCK=$(getconf CLK_TCK)
WRK_RUN=0 # numbers every wrk invocation: telegram.lua keeps each one's ids apart
# run_wrk PORT PATH DURATION OUT
run_wrk() {
    WRK_RUN=$((WRK_RUN + 1))
    ${PIN_WRK[@]+"${PIN_WRK[@]}"} wrk -t"$THREADS" -c"$CONNECTIONS" -d"$3" --latency \
        -s "$HERE/telegram.lua" "http://127.0.0.1:$1$2" -- "$WRK_RUN" "$SECRET" "$CHATS" "$SIZE" \
        >"$4" 2>&1 || { cat "$4" >&2; die "wrk on $2 failed"; }
}
# errors OUTFILE → "" or a description of non-2xx responses / socket errors.
wrk_errors() { grep -E 'Non-2xx|Socket errors' "$1" | sed 's/^ *//' | tr '\n' ';' || true; }
requests_of() { awk '/requests in/ {print $1; exit}' "$1"; }

# The generator checked on a Switchyard of its own with metrics on (so the
# measured one runs without them, as run.sh's): a warm-up's worth of updates on
# each telegram route, twice (two wrk runs, so two id ranges), and none may be
# deduplicated or coalesced, nor lack an affinity key.
log "checking telegram.lua's updates on a Switchyard with metrics (port $CHECK_PORT)"
RUST_LOG=warn launch check "$CHECK_PORT" "$SY" run --config "$CFG_CHECK"
metric() { # NAME ROUTE [RESULT]: the counter's value, 0 when absent
    curl -sS "http://127.0.0.1:$ADMIN_PORT/metrics" \
        | awk -v m="$1" -v r="route=\"$2\"" -v k="${3:+result=\"$3\"}" \
            'index($1, m "{") == 1 && index($1, r) && (k == "" || index($1, k)) {v = $NF} END {print v + 0}'
}
declare -A ROUTE=([telegram]=tg [tg-redis]=tg_redis)
for r in "${RUNS[@]:1}"; do
    read -r name path <<<"$r"
    sent=0
    for i in 1 2; do
        run_wrk "$CHECK_PORT" "$path" "$WARMUP" "$TMP/check-$name-$i.txt"
        err=$(wrk_errors "$TMP/check-$name-$i.txt")
        [ -z "$err" ] || die "$name on the checking proxy: $err"
        sent=$((sent + $(requests_of "$TMP/check-$name-$i.txt")))
    done
    # wrk stops with up to CONNECTIONS updates on their way: they are delivered
    # all the same, after wrk counted.
    for _ in $(seq 50); do
        delivered=$(metric switchyard_telegram_updates_total "${ROUTE[$name]}" delivered)
        [ "$delivered" -lt "$sent" ] || break
        sleep 0.1
    done
    dedup=$(metric switchyard_telegram_updates_total "${ROUTE[$name]}" deduplicated)
    coalesced=$(metric switchyard_telegram_updates_total "${ROUTE[$name]}" coalesced)
    nokey=$(metric switchyard_telegram_updates_total "${ROUTE[$name]}" affinity_fallback)
    fallback=$(metric switchyard_telegram_dedup_fallback_total "${ROUTE[$name]}")
    printf '  %-9s wrk completed %d; delivered %d, deduplicated %d, coalesced %d, without a key %d, store fallbacks %d\n' \
        "$name" "$sent" "$delivered" "$dedup" "$coalesced" "$nokey" "$fallback" >&2
    { [ "$dedup" = 0 ] && [ "$coalesced" = 0 ]; } || die "$name: telegram.lua repeated update_ids"
    [ "$nokey" = 0 ] || die "$name: $nokey updates had no affinity key"
    { [ "$delivered" -ge "$sent" ] && [ "$delivered" -le $((sent + 2 * CONNECTIONS)) ]; } \
        || die "$name: $delivered delivered for $sent requests"
    [ "$fallback" = 0 ] || die "$name: the Redis store failed $fallback times; see $TMP/check.log"
done
# Each bot's share of a telegram route's updates: the ring's spread of the chats.
for r in "${RUNS[@]:1}"; do
    read -r name path <<<"$r"
    share=$(curl -sS "http://127.0.0.1:$ADMIN_PORT/metrics" \
        | awk -v r="route=\"${ROUTE[$name]}\"" '
            index($1, "switchyard_requests_total{") == 1 && index($1, r) && match($1, /server="[^"]*"/) {
                n[substr($1, RSTART + 8, RLENGTH - 9)] += $NF; t += $NF }
            END { for (s in n) if (n[s] > 0) printf "%s %.0f%%  ", s, 100 * n[s] / t }')
    printf '  %-9s updates per bot (%d chats on the ring): %s\n' "$name" "$CHATS" "${share:-unknown}" >&2
done
stop "${PID[check]}"

# For the "others" column: CPU used during a run by anything this script did
# not start (as run.sh's).
all_pids() { with_children "${STARTED[@]}"; }
# wrk's CPU, once it has exited: cutime+cstime (fields 16, 17) of this shell.
reaped_ticks() {
    local stat f
    stat=$(cat "/proc/$$/stat")
    read -r -a f <<<"${stat##*) }"
    echo $((f[13] + f[14]))
}
per_req() { awk -v t="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN {printf "%.2f", t * 1e6 / hz / n}'; }

log "warm-up: $WARMUP per route"
for r in "${RUNS[@]}"; do
    read -r name path <<<"$r"
    run_wrk "$SY_PORT" "$path" "$WARMUP" "$TMP/warmup-$name.txt"
    err=$(wrk_errors "$TMP/warmup-$name.txt")
    [ -z "$err" ] || { echo "  $name warm-up: $err" >&2; FAILED=1; }
done

echo "round,run,path,threads,connections,duration,chats,size,requests,rps,p50_us,p99_us,cpu_ticks,cpu_us_per_req,user_us_per_req,sys_us_per_req,redis_us_per_req,others_cpu_pct,non2xx,socket_errors,rss_kib" >"$CSV"
log "measuring: $ROUNDS rounds × ${#RUNS[@]} runs, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $SIZE-byte updates over $CHATS chats"
for round in $(seq "$ROUNDS"); do
    for r in "${RUNS[@]}"; do
        read -r name path <<<"$r"
        out=$TMP/round$round-$name.txt
        read -r user0 sys0 < <(user_sys_ticks "${PID[switchyard]}")
        redis0=$(ticks_of own "${PID[redis]:-}"); all0=$(ticks_of own "$(all_pids)"); wrk0=$(reaped_ticks)
        read -r busy0 total0 < <(machine_ticks)
        run_wrk "$SY_PORT" "$path" "$DURATION" "$out"
        read -r busy1 total1 < <(machine_ticks)
        read -r user1 sys1 < <(user_sys_ticks "${PID[switchyard]}")
        redis1=$(ticks_of own "${PID[redis]:-}"); all1=$(ticks_of own "$(all_pids)"); wrk1=$(reaped_ticks)
        # Clamped at 0: tick rounding can make the difference slightly negative.
        others=$(( (busy1 - busy0) - (all1 - all0) - (wrk1 - wrk0) ))
        others_pct=$(( (others > 0 ? others : 0) * 100 / (total1 - total0) ))
        rss=$(awk '/^VmRSS:/ {print $2}' "/proc/${PID[switchyard]}/status")

        requests=$(requests_of "$out")
        rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
        p50=$(to_us "$(awk '$1 == "50%" {print $2}' "$out")")
        p99=$(to_us "$(awk '$1 == "99%" {print $2}' "$out")")
        if ! { [ -n "$requests" ] && [ -n "$rps" ] && [ "$requests" -gt 0 ]; }; then
            cat "$out" >&2
            die "could not parse wrk output for $name"
        fi
        user=$((user1 - user0)); sys=$((sys1 - sys0)); ticks=$((user + sys))
        cpu=$(per_req "$ticks" "$requests")
        user_pr=$(per_req "$user" "$requests"); sys_pr=$(per_req "$sys" "$requests")
        redis_pr=$(per_req $((redis1 - redis0)) "$requests")
        non2xx=$(awk -F': *' '/Non-2xx/ {print $2}' "$out")
        sockerr=$(sed -n 's/^ *Socket errors: //p' "$out" | tr -d ',')
        echo "$round,$name,$path,$THREADS,$CONNECTIONS,$DURATION,$CHATS,$SIZE,$requests,$rps,$p50,$p99,$ticks,$cpu,$user_pr,$sys_pr,$redis_pr,$others_pct,${non2xx:-0},$sockerr,$rss" >>"$CSV"
        printf '  round %d %-9s %8.0f req/s  p50 %5d us  p99 %6d us  cpu %6.2f us/req (user %6.2f sys %6.2f)  redis %5.2f us/req  rss %6.1f MiB  others %2d%%\n' \
            "$round" "$name" "$rps" "$p50" "$p99" "$cpu" "$user_pr" "$sys_pr" "$redis_pr" \
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
echo "Telegram mode — POST $SIZE-byte updates over $CHATS chats, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, median of $ROUNDS interleaved rounds, $(nproc) CPUs, PIN=$PIN"
# Medians per run over the rounds; each telegram run against plain, as the ratio
# of the medians and the spread of the per-round ratios (the runs of a round are
# next to each other in time, so drift mostly cancels in each pair).
awk -F, '
    function median(s,    n, i, j, t, a) {
        n = split(s, a, " ")
        for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    # spread RUN COL: "lo..hi" of RUN / plain per round for CSV column COL.
    function spread(run, c,    r, x, lo, hi, k) {
        k = 0
        for (r in rounds) {
            if (!((r, run) in row) || !((r, "plain") in row)) continue
            split(row[r, "plain"], p, ","); split(row[r, run], q, ",")
            if (p[c] <= 0) continue
            x = q[c] / p[c]
            if (k == 0 || x < lo) lo = x
            if (k == 0 || x > hi) hi = x
            k++
        }
        return k ? sprintf("%.3f..%.3f", lo, hi) : "-"
    }
    NR > 1 {
        if (!($2 in seen)) { seen[$2] = 1; order[++n] = $2 }
        rounds[$1] = 1; row[$1, $2] = $0
        for (c = 10; c <= 21; c++) v[$2, c] = v[$2, c] " " $c
        if ($19 + 0 > 0 || $20 ~ /[1-9]/) bad[$2] = 1
        if ($18 + 0 > maxo) maxo = $18 + 0
    }
    END {
        printf "%-9s %9s %7s %7s %11s %12s %11s %13s %12s\n", "run", "req/s", "p50 us", "p99 us", "CPU us/req", "user us/req", "sys us/req", "redis us/req", "RSS MiB end"
        for (i = 1; i <= n; i++) {
            r = order[i]
            for (c = 10; c <= 21; c++) m[r, c] = median(v[r, c])
            printf "%-9s %9.0f %7.0f %7.0f %11.2f %12.2f %11.2f %13.2f %12.1f%s\n", r, m[r, 10], m[r, 11], m[r, 12], m[r, 14], m[r, 15], m[r, 16], m[r, 17], m[r, 21] / 1024, (r in bad) ? "  ERRORS (see above)" : ""
        }
        printf "CPU used by other processes during a run: at most %d%% of the machine%s\n", maxo, (maxo > 5) ? " (noisy: rerun on a quiet machine)" : ""
        if (!(("plain", 10) in m) || m["plain", 10] <= 0) exit
        printf "\n%-18s %14s %20s %12s %20s   %s\n", "against plain", "req/s (median)", "per round", "CPU/req", "per round", "throughput cost"
        for (i = 1; i <= n; i++) {
            r = order[i]; if (r == "plain") continue
            t = m[r, 10] / m["plain", 10]
            printf "%-18s %14.3f %20s %12.3f %20s   %5.1f %%%s\n", r " / plain", t, spread(r, 10), m[r, 14] / m["plain", 14], spread(r, 14), \
                100 * (1 - t), (r == "telegram") ? ((t >= 0.85) ? " (target ≤ 15 %: met)" : " (target ≤ 15 %: MISSED)") : ""
        }
    }' "$CSV"
echo "raw results: ${CSV#"$ROOT"/}"

[ "$FAILED" = 0 ] || die "some runs had non-2xx responses or socket errors (listed above)"
