#!/usr/bin/env bash
# Rate limits end to end, behind the same three origins: what a limit costs when
# it never triggers, and how exactly it holds when it does, for Switchyard with
# the local store, Switchyard with the Redis store (a redis-server on a Unix
# socket), and nginx's limit_req. See README.md next to this file. Linux only;
# run as root or with sudo when nginx/wrk/redis-server still need installing.
#
#   benches/compare/limits.sh                  # 3 interleaved rounds
#   RATE=2000 BURST=50 ROUNDS=5 benches/compare/limits.sh
#
# Each round runs, one after the other:
#   cost    sy-plain    Switchyard, no limit                       GET /ping
#           sy-local    a local rate_limit that never triggers      GET /ping
#           sy-redis    the same limit with store = Redis           GET /ping
#           ng-plain    nginx, no limit                             GET /ping
#           ng-limit    limit_req that never triggers               GET /l/ping
#   hold    sy-local-t  rate_limit RATE/s, burst BURST, nodelay     GET /t/ping
#           sy-redis-t  the same with store = Redis                 GET /t/ping
#           ng-limit-t  limit_req rate=RATEr/s burst=BURST nodelay  GET /t/ping
# All wrk connections come from 127.0.0.1: one key. A held limit should accept
# RATE × seconds + BURST + 1 requests per run (the bucket is full again by the
# next run) and answer the rest 429.
#
# Knobs (environment): THREADS CONNECTIONS DURATION WARMUP ROUNDS RATE BURST PIN
# PORT_BASE ORIGIN_PORTS KEEP_TMP.
set -euo pipefail
export LC_ALL=C

THREADS=${THREADS:-1}          # wrk threads
CONNECTIONS=${CONNECTIONS:-50} # wrk connections
DURATION=${DURATION:-10s}      # one measured run
WARMUP=${WARMUP:-2s}           # one unmeasured run per proxy before round 1
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-1000}             # the held limit, requests per second
BURST=${BURST:-100}            # its burst
PIN=${PIN:-0}                  # as run.sh: 0 pins nothing (how results are reported)
PORT_BASE=${PORT_BASE:-18180}  # sy-plain, sy-local, sy-redis, nginx: PORT_BASE + 0..3
ORIGIN_PORTS=${ORIGIN_PORTS:-"19181 19182 19183"}
KEEP_TMP=${KEEP_TMP:-0}

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PROG=limits
# shellcheck source=benches/compare/common.sh
. "$HERE/common.sh"
help_or_no_args "$@"
[[ $RATE =~ ^[1-9][0-9]*$ ]] || die "RATE must be a positive integer: $RATE"
[[ $BURST =~ ^[0-9]+$ ]] || die "BURST must be an integer: $BURST"

# A limit no benchmark load reaches: a million requests a second with a burst
# of a hundred thousand, so the decision is made on every request but never
# refuses one.
NEVER_RATE=1000000
NEVER_BURST=100000

install_missing nginx wrk redis-server
require ss curl getconf
build_switchyard
declare -A PORT=([sy-plain]=$PORT_BASE [sy-local]=$((PORT_BASE + 1)) [sy-redis]=$((PORT_BASE + 2)) [nginx]=$((PORT_BASE + 3)))
read -r -a ORIGINS <<<"$ORIGIN_PORTS"
check_ports PORT_BASE/ORIGIN_PORTS "${PORT[@]}" "${ORIGINS[@]}"
warn_if_busy "the benchmark starts; results will be noisy"
make_workdir limits
copy_switchyard "$TMP"
pin_setup
declare -A PID=()
# ------------------------------------------------------------ origins, redis
start_origins
SOCK=$TMP/redis.sock
log "starting redis-server on $SOCK"
redis-server --port 0 --unixsocket "$SOCK" --unixsocketperm 700 --save "" \
    --appendonly no --dir "$TMP" >"$TMP/redis.log" 2>&1 &
track $!
PID[redis]=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || die "redis-server did not open $SOCK; see $TMP/redis.log"

# ------------------------------------------------------------------ proxies
# sy_config NAME PORT STORE: the run.sh template, plus for a limited proxy the
# never-triggering limit on / and the held one on /t/.
sy_config() {
    local out=$TMP/$1.toml
    render "$HERE/switchyard.toml.tmpl" "$out" "$TMP" "$2"
    if [ -n "$3" ]; then
        # The template's one route is `path = "/"`: give it the limit, and add /t/.
        sed -i "s|^upstream = \"origins\"|&\nrate_limit = { rate = \"$NEVER_RATE/s\", burst = $NEVER_BURST, store = \"$3\" }|" "$out"
        cat >>"$out" <<EOF

[[route]]
path = "/t/"
upstream = "origins"
rate_limit = { rate = "$RATE/s", burst = $BURST, store = "$3" }
EOF
    fi
    "$SY" check --config "$out" >/dev/null || die "switchyard rejected $out"
    echo "$out"
}
# Written first, not inside the launch lines: a `die` in a command substitution
# there would only end the subshell, and the proxy would start without a file.
CFG_PLAIN=$(sy_config sy-plain "${PORT[sy-plain]}" "")
CFG_LOCAL=$(sy_config sy-local "${PORT[sy-local]}" local)
CFG_REDIS=$(sy_config sy-redis "${PORT[sy-redis]}" "redis+unix://$SOCK")
log "starting sy-plain, sy-local, sy-redis, nginx on ${PORT[sy-plain]}..${PORT[nginx]}"
RUST_LOG=warn launch sy-plain "${PORT[sy-plain]}" "$SY" run --config "$CFG_PLAIN"
RUST_LOG=warn launch sy-local "${PORT[sy-local]}" "$SY" run --config "$CFG_LOCAL"
RUST_LOG=warn launch sy-redis "${PORT[sy-redis]}" "$SY" run --config "$CFG_REDIS"
mkdir -p "$TMP/nginx"
render "$HERE/nginx.conf.tmpl" "$TMP/nginx/nginx.conf" "$TMP/nginx" "${PORT[nginx]}"
# The template's one location proxies /; add the zones and two limited locations
# with the same proxy settings.
awk -v never="$NEVER_RATE" -v rate="$RATE" '
    /^    upstream origins/ {
        print "    limit_req_zone $binary_remote_addr zone=never:10m rate=" never "r/s;"
        print "    limit_req_zone $binary_remote_addr zone=held:10m rate=" rate "r/s;"
        print "    limit_req_status 429;"
        print ""
    }
    { print }
' "$TMP/nginx/nginx.conf" >"$TMP/nginx/nginx.conf.1"
# Copy the body of `location / { ... }` into /l/ and /t/ with their limit_req.
awk -v nb="$NEVER_BURST" -v burst="$BURST" '
    /^        location \/ \{/ { grab = 1; print; next }
    grab && /^        \}/ {
        grab = 0; print
        print "        location /l/ {"; print "            limit_req zone=never burst=" nb " nodelay;"; printf "%s", body; print "        }"
        print "        location /t/ {"; print "            limit_req zone=held burst=" burst " nodelay;"; printf "%s", body; print "        }"
        next
    }
    grab { body = body $0 "\n" }
    { print }
' "$TMP/nginx/nginx.conf.1" >"$TMP/nginx/nginx.conf"
nginx -t -q -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" \
    || die "nginx rejected $TMP/nginx/nginx.conf"
launch nginx "${PORT[nginx]}" nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log"

# --------------------------------------------------------------------- runs
# Each run: NAME PROXY PATH.
RUNS=(
    "sy-plain sy-plain /ping" "sy-local sy-local /ping" "sy-redis sy-redis /ping"
    "ng-plain nginx /ping" "ng-limit nginx /l/ping"
    "sy-local-t sy-local /t/ping" "sy-redis-t sy-redis /t/ping" "ng-limit-t nginx /t/ping"
)
log "checking every run's path answers 200"
for r in "${RUNS[@]}"; do
    read -r name proxy path <<<"$r"
    code=$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:${PORT[$proxy]}$path")
    [ "$code" = 200 ] || die "$name: GET $path answered $code"
done

CLK_TCK=$(getconf CLK_TCK)
run_wrk() { # PROXY PATH DURATION OUT
    ${PIN_WRK[@]+"${PIN_WRK[@]}"} wrk -t"$THREADS" -c"$CONNECTIONS" -d"$3" --latency \
        "http://127.0.0.1:${PORT[$1]}$2" >"$4" 2>&1 || { cat "$4" >&2; die "wrk against $1 failed"; }
}
log "warm-up: $WARMUP per run"
for r in "${RUNS[@]}"; do
    read -r name proxy path <<<"$r"
    run_wrk "$proxy" "$path" "$WARMUP" "$TMP/warmup-$name.txt"
done

echo "round,run,path,requests,seconds,rps,p50_us,p99_us,non2xx,cpu_us_per_req,redis_cpu_us_per_req" >"$CSV"
log "measuring: $ROUNDS rounds × ${#RUNS[@]} runs, wrk -t$THREADS -c$CONNECTIONS -d$DURATION"
for round in $(seq "$ROUNDS"); do
    for r in "${RUNS[@]}"; do
        read -r name proxy path <<<"$r"
        # Let a held bucket fill up again: BURST / RATE seconds, and some.
        sleep 1
        out=$TMP/round$round-$name.txt
        t0=$(ticks_of own "$(with_children "${PID[$proxy]}")"); r0=$(ticks_of own "${PID[redis]}")
        run_wrk "$proxy" "$path" "$DURATION" "$out"
        t1=$(ticks_of own "$(with_children "${PID[$proxy]}")"); r1=$(ticks_of own "${PID[redis]}")
        requests=$(awk '/requests in/ {print $1; exit}' "$out")
        seconds=$(awk '/requests in/ {sub(/s,$/, "", $4); print $4; exit}' "$out")
        rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
        p50=$(to_us "$(awk '$1 == "50%" {print $2}' "$out")")
        p99=$(to_us "$(awk '$1 == "99%" {print $2}' "$out")")
        non2xx=$(awk -F': *' '/Non-2xx/ {print $2}' "$out"); non2xx=${non2xx:-0}
        if [ -z "$requests" ] || [ "$requests" -le 0 ]; then
            cat "$out" >&2
            die "could not parse wrk output for $name"
        fi
        cpu=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$requests" 'BEGIN {printf "%.2f", t * 1e6 / hz / n}')
        rcpu=$(awk -v t=$((r1 - r0)) -v hz="$CLK_TCK" -v n="$requests" 'BEGIN {printf "%.2f", t * 1e6 / hz / n}')
        echo "$round,$name,$path,$requests,$seconds,$rps,$p50,$p99,$non2xx,$cpu,$rcpu" >>"$CSV"
        printf '  round %d %-11s %8.0f req/s  p50 %5d us  p99 %6d us  non-2xx %7d  cpu %6.2f us/req  redis %5.2f us/req\n' \
            "$round" "$name" "$rps" "$p50" "$p99" "$non2xx" "$cpu" "$rcpu" >&2
        case $name in *-t) ;; *) [ "$non2xx" = 0 ] || die "$name: $non2xx non-2xx answers from a limit that must never trigger" ;; esac
    done
done

# -------------------------------------------------------------------- table
echo
echo "Rate limits — wrk -t$THREADS -c$CONNECTIONS -d$DURATION from one address, median of $ROUNDS interleaved rounds, $(nproc) CPUs, PIN=$PIN"
awk -F, -v rate="$RATE" -v burst="$BURST" '
    function median(s,    n, i, j, t, a) {
        n = split(s, a, " ")
        for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    NR > 1 {
        if (!($2 in seen)) { seen[$2] = 1; order[++n] = $2 }
        rps[$2] = rps[$2] " " $6; p99[$2] = p99[$2] " " $8; p50[$2] = p50[$2] " " $7
        cpu[$2] = cpu[$2] " " $10; rcpu[$2] = rcpu[$2] " " $11
        acc[$2] = acc[$2] " " ($4 - $9); ref[$2] = ref[$2] " " $9; exp_[$2] = exp_[$2] " " (rate * $5 + burst + 1)
    }
    END {
        print "\nWhat a limit that never triggers costs:"
        printf "  %-11s %10s %8s %8s %11s %14s\n", "run", "req/s", "p50 us", "p99 us", "CPU us/req", "redis us/req"
        for (i = 1; i <= n; i++) {
            r = order[i]; if (r ~ /-t$/) continue
            m[r, "rps"] = median(rps[r]); m[r, "p99"] = median(p99[r])
            printf "  %-11s %10.0f %8.0f %8.0f %11.2f %14.2f\n", r, m[r, "rps"], median(p50[r]), m[r, "p99"], median(cpu[r]), median(rcpu[r])
        }
        if (m["sy-plain", "rps"] > 0) {
            printf "  sy-local / sy-plain: %.3f × req/s (target ≥ 0.97)\n", m["sy-local", "rps"] / m["sy-plain", "rps"]
            printf "  sy-redis / sy-plain: %.3f × req/s; p99 sy-redis − sy-local: %+.2f ms (target ≤ +0.3 ms)\n", \
                m["sy-redis", "rps"] / m["sy-plain", "rps"], (m["sy-redis", "p99"] - m["sy-local", "p99"]) / 1000
        }
        if (m["ng-plain", "rps"] > 0)
            printf "  ng-limit / ng-plain: %.3f × req/s\n", m["ng-limit", "rps"] / m["ng-plain", "rps"]
        printf "\nA limit of %d/s, burst %d, nodelay, held (expected accepted = rate × seconds + burst + 1):\n", rate, burst
        printf "  %-11s %10s %10s %9s %10s %8s\n", "run", "accepted", "expected", "ratio", "refused", "p99 us"
        for (i = 1; i <= n; i++) {
            r = order[i]; if (r !~ /-t$/) continue
            a = median(acc[r]); e = median(exp_[r])
            printf "  %-11s %10.0f %10.0f %9.3f %10.0f %8.0f\n", r, a, e, a / e, median(ref[r]), median(p99[r])
        }
    }' "$CSV"
echo "raw results: ${CSV#"$ROOT"/}"
