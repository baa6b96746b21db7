#!/usr/bin/env bash
# TLS termination: Switchyard, nginx and HAProxy behind the same three sample
# origins, each terminating TLS with the same ECDSA P-256 certificate (made by
# this script with openssl), driven by wrk over https in interleaved rounds.
# Two modes:
#   keepalive  wrk's CONNECTIONS connections stay open: TLS records only.
#   handshake  every request carries `Connection: close`, so every request is a
#              new TCP connection and a full TLS handshake (wrk resumes no
#              sessions): req/s is the handshake rate.
# Prints a table per mode with ratios to nginx. Not run by CI; see README.md
# next to this file. Linux only; run as root or with sudo when
# nginx/haproxy/wrk still need installing.
#
#   benches/compare/tls.sh                       # both modes, 3 rounds, about 4 minutes
#   MODES=handshake ROUNDS=5 benches/compare/tls.sh
#
# Knobs (environment): MODES THREADS CONNECTIONS DURATION WARMUP ROUNDS
# SCENARIO PIN BUILD SY_PORT NGINX_PORT HAPROXY_PORT ORIGIN_PORTS KEEP_TMP.
set -euo pipefail

MODES=${MODES:-"keepalive handshake"} # which modes run, in this order
THREADS=${THREADS:-1}          # wrk threads: 1, the 2 cores are needed elsewhere
CONNECTIONS=${CONNECTIONS:-50} # wrk connections
DURATION=${DURATION:-10s}      # one measured run
WARMUP=${WARMUP:-3s}           # one unmeasured run per proxy and mode before round 1
ROUNDS=${ROUNDS:-3}            # each round runs every proxy once, in order
SCENARIO=${SCENARIO:-/ping}    # the path (and query) wrk requests
PIN=${PIN:-1}                  # 1: origins on CPU 0, wrk on CPU 1, proxies free
BUILD=${BUILD:-1}              # 0: use target/release/switchyard as it is
SY_PORT=${SY_PORT:-18110}
NGINX_PORT=${NGINX_PORT:-18111}
HAPROXY_PORT=${HAPROXY_PORT:-18112}
ORIGIN_PORTS=${ORIGIN_PORTS:-"19131 19132 19133"}
KEEP_TMP=${KEEP_TMP:-0}        # 1: keep the temp dir (configs, certificate, logs, wrk output)

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PROG=tls
# shellcheck source=benches/compare/common.sh
. "$HERE/common.sh"
help_or_no_args "$@"
for m in $MODES; do
    case $m in keepalive|handshake) ;; *) die "unknown mode $m (expected keepalive, handshake)" ;; esac
done

PROXIES=(switchyard nginx haproxy)
declare -A PORT=([switchyard]=$SY_PORT [nginx]=$NGINX_PORT [haproxy]=$HAPROXY_PORT)
declare -A PID=()
read -r -a ORIGINS <<<"$ORIGIN_PORTS"

# ---------------------------------------------------------------- tools, build
install_missing nginx haproxy wrk
require taskset ss curl getconf openssl
[ "$BUILD" = 0 ] || build_switchyard
check_ports SY_PORT/NGINX_PORT/HAPROXY_PORT/ORIGIN_PORTS "${PORT[@]}" "${ORIGINS[@]}"
warn_if_busy "the benchmark starts; results will be noisy"
make_workdir tls
FAILED=0
copy_switchyard "$TMP"
pin_setup

# ----------------------------------------------------------------- certificate
# One self-signed ECDSA P-256 certificate for every proxy; the key in PKCS#8.
# HAProxy wants the certificate and its key in one file.
log "making an ECDSA P-256 certificate"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$TMP/key.pem" -out "$TMP/cert.pem" -days 2 -subj /CN=bench.test \
    -addext subjectAltName=DNS:bench.test 2>/dev/null || die "openssl could not make the certificate"
cat "$TMP/cert.pem" "$TMP/key.pem" >"$TMP/combined.pem"

# ------------------------------------------------------------------- origins
start_origins

# ------------------------------------------------------------------- proxies
log "starting switchyard :$SY_PORT, nginx :$NGINX_PORT, haproxy :$HAPROXY_PORT (https)"
# @CERTS@: where the certificate is, for every template.
render "$HERE/tls-switchyard.toml.tmpl" "$TMP/switchyard.toml" "$TMP" "$SY_PORT" "s|@CERTS@|$TMP|g"
"$SY" check --config "$TMP/switchyard.toml" >/dev/null
RUST_LOG=warn launch switchyard "$SY_PORT" "$SY" run --no-watch --config "$TMP/switchyard.toml"

mkdir -p "$TMP/nginx"
render "$HERE/tls-nginx.conf.tmpl" "$TMP/nginx/nginx.conf" "$TMP/nginx" "$NGINX_PORT" "s|@CERTS@|$TMP|g"
nginx -t -q -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" \
    || die "nginx rejected $TMP/nginx/nginx.conf"
launch nginx "$NGINX_PORT" nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log"

render "$HERE/tls-haproxy.cfg.tmpl" "$TMP/haproxy.cfg" "$TMP" "$HAPROXY_PORT" "s|@CERTS@|$TMP|g"
haproxy -c -q -f "$TMP/haproxy.cfg" || die "haproxy rejected $TMP/haproxy.cfg"
launch haproxy "$HAPROXY_PORT" haproxy -db -f "$TMP/haproxy.cfg"

# ------------------------------------------------------------ /proc sampling
CLK_TCK=$(getconf CLK_TCK)
proxy_pids() { with_children "${PID[$1]}"; }
cpu_ticks() { ticks_of own "$(proxy_pids "$1")"; }
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
log "checking status and round-robin over https (3 requests on one connection each)"
for name in "${PROXIES[@]}"; do
    url="https://127.0.0.1:${PORT[$name]}$SCENARIO"
    heads=$(curl -sSk -g -D - -o /dev/null "$url" -o /dev/null "$url" -o /dev/null "$url") \
        || die "$name: curl $url failed"
    codes=$(awk '/^HTTP\// {print $2}' <<<"$heads" | tr '\n' ' ')
    origins=$(x_origins <<<"$heads" | tr '\n' ' ')
    printf '  %-10s status: %s x-origin: %s\n' "$name" "$codes" "$origins" >&2
    [ "$codes" = "200 200 200 " ] || die "$name: expected three 200s, got: $codes"
    distinct=$(tr ' ' '\n' <<<"$origins" | sed '/^$/d' | sort -u | wc -l)
    [ "$distinct" -eq 3 ] || die "$name does not rotate over the three origins: $origins"
done
# The same handshake everywhere: what an OpenSSL client (wrk's library) gets.
log "negotiated with an OpenSSL client (protocol, cipher, key exchange, ALPN)"
for name in "${PROXIES[@]}"; do
    got=$(openssl s_client -connect "127.0.0.1:${PORT[$name]}" -alpn http/1.1 </dev/null 2>/dev/null \
        | awk -F': *' '/^New, / {split($0, w, /, /); p=w[2]; c=$0; sub(/.*Cipher is /, "", c)}
                      /^Server Temp Key/ {k=$2} /^ALPN protocol/ {a=$2}
                      END {print p, c, k, "alpn=" a}')
    printf '  %-10s %s\n' "$name" "$got" >&2
done
log "headers the origin received (GET /)"
for name in "${PROXIES[@]}"; do
    got=$(curl -sSk "https://127.0.0.1:${PORT[$name]}/" | grep -iE '^(host|x-[a-z-]+):' | sort | tr '\n' ';')
    printf '  %-10s %s\n' "$name" "$got" >&2
done

# ------------------------------------------------------------------ wrk runs
# run_wrk NAME MODE DURATION OUTFILE
run_wrk() {
    local close=()
    [ "$2" = handshake ] && close=(-H 'Connection: close')
    ${PIN_WRK[@]+"${PIN_WRK[@]}"} wrk -t"$THREADS" -c"$CONNECTIONS" -d"$3" --latency \
        ${close[@]+"${close[@]}"} "https://127.0.0.1:${PORT[$1]}$SCENARIO" >"$4" 2>&1 || {
        cat "$4" >&2
        die "wrk against $1 failed"
    }
}

wrk_errors() {
    grep -E 'Non-2xx|Socket errors' "$1" | sed 's/^ *//' | tr '\n' ';' || true
}

for mode in $MODES; do
    log "warm-up ($mode): $WARMUP per proxy"
    for name in "${PROXIES[@]}"; do
        run_wrk "$name" "$mode" "$WARMUP" "$TMP/warmup-$mode-$name.txt"
        err=$(wrk_errors "$TMP/warmup-$mode-$name.txt")
        [ -z "$err" ] || { echo "  $name warm-up ($mode): $err" >&2; FAILED=1; }
    done
done

echo "mode,round,proxy,scenario,threads,connections,duration,requests,rps,p50_us,p99_us,cpu_ticks,cpu_us_per_req,rss_kib,others_cpu_pct,non2xx,socket_errors" >"$CSV"
for mode in $MODES; do
    log "measuring $mode: $ROUNDS rounds × ${PROXIES[*]}, wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency $SCENARIO"
    for round in $(seq "$ROUNDS"); do
        for name in "${PROXIES[@]}"; do
            out=$TMP/$mode-round$round-$name.txt
            before=$(cpu_ticks "$name"); all0=$(ticks_of own "$(all_pids)"); wrk0=$(reaped_ticks)
            read -r busy0 total0 < <(machine_ticks)
            run_wrk "$name" "$mode" "$DURATION" "$out"
            read -r busy1 total1 < <(machine_ticks)
            after=$(cpu_ticks "$name"); all1=$(ticks_of own "$(all_pids)"); wrk1=$(reaped_ticks)
            others=$(( (busy1 - busy0) - (all1 - all0) - (wrk1 - wrk0) ))
            others_pct=$(( (others > 0 ? others : 0) * 100 / (total1 - total0) ))
            rss=$(rss_kib "$name")
            requests=$(awk '/requests in/ {print $1; exit}' "$out")
            rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
            p50=$(to_us "$(awk '$1 == "50%" {print $2}' "$out")")
            p99=$(to_us "$(awk '$1 == "99%" {print $2}' "$out")")
            if ! { [ -n "$requests" ] && [ -n "$rps" ] && [ "$requests" -gt 0 ]; }; then
                cat "$out" >&2
                die "could not parse wrk output for $name ($mode)"
            fi
            ticks=$((after - before))
            cpu_per_req=$(awk -v t="$ticks" -v hz="$CLK_TCK" -v n="$requests" 'BEGIN {printf "%.2f", t * 1e6 / hz / n}')
            non2xx=$(awk -F': *' '/Non-2xx/ {print $2}' "$out")
            sockerr=$(sed -n 's/^ *Socket errors: //p' "$out" | tr -d ',')
            echo "$mode,$round,$name,$SCENARIO,$THREADS,$CONNECTIONS,$DURATION,$requests,$rps,$p50,$p99,$ticks,$cpu_per_req,$rss,$others_pct,${non2xx:-0},$sockerr" >>"$CSV"
            printf '  %-9s round %d %-10s %8.0f req/s  p50 %6d us  p99 %6d us  cpu %7.2f us/req  rss %5.1f MiB  others %2d%%\n' \
                "$mode" "$round" "$name" "$rps" "$p50" "$p99" "$cpu_per_req" "$(awk -v k="$rss" 'BEGIN {print k / 1024}')" "$others_pct" >&2
            err=$(wrk_errors "$out")
            if [ -n "$err" ]; then
                echo "  !! $name $mode round $round: $err" >&2
                FAILED=1
            fi
        done
    done
done

# --------------------------------------------------------------------- table
for mode in $MODES; do
    echo
    case $mode in
        keepalive) echo "TLS keep-alive $SCENARIO — wrk -t$THREADS -c$CONNECTIONS -d$DURATION, median of $ROUNDS interleaved rounds, $(nproc) CPUs, PIN=$PIN (target: Switchyard req/s ≥ 1.15 × nginx)" ;;
        handshake) echo "TLS new handshakes (Connection: close, one full handshake per request) — wrk -t$THREADS -c$CONNECTIONS -d$DURATION, median of $ROUNDS rounds (target: Switchyard handshakes/s ≥ nginx)" ;;
    esac
    awk -F, -v mode="$mode" -v order="${PROXIES[*]}" '
        function median(key,    n, i, j, t, a) {
            n = split(vals[key], a, " ")
            for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
            return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        NR > 1 && $1 == mode {
            vals[$3, "rps"] = vals[$3, "rps"] " " $9
            vals[$3, "p50"] = vals[$3, "p50"] " " $10
            vals[$3, "p99"] = vals[$3, "p99"] " " $11
            vals[$3, "cpu"] = vals[$3, "cpu"] " " $13
            vals[$3, "rss"] = vals[$3, "rss"] " " $14
            if ($16 + 0 > 0 || $17 ~ /[1-9]/) bad[$3] = 1
            if ($15 + 0 > maxo) maxo = $15 + 0
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
done
echo "raw results: ${CSV#"$ROOT"/}"

[ "$FAILED" = 0 ] || die "some runs had non-2xx responses or socket errors (listed above)"
