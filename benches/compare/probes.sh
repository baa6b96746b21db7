#!/usr/bin/env bash
# Protocol probes: the same fixed set of raw-socket requests (request
# smuggling, chunked edge cases, request-line and header abuse, path tricks,
# odd clients, HTTP/2 prior knowledge) sent to Switchyard, nginx and HAProxy,
# all three configured alike: /public/ and / to a pool of three sample
# origins, /admin/ answered 403 by the proxy. Each origin sits behind a
# recording relay (probes.py relay) that logs every request the proxy sends it,
# smuggled ones included. Prints, per probe, each proxy's answer (status
# line(s), or close/reset/timeout), what reached an origin, and a verdict
# against the acceptable answers listed with each probe in probes.py, then
# the count of correct answers per proxy. Not run by CI; see README.md next to
# this file. Linux only; run as root or with sudo when nginx/haproxy still
# need installing.
#
#   benches/compare/probes.sh                      # all probes, about 2 minutes
#   BASELINE=/path/to/old/switchyard benches/compare/probes.sh   # before/after
#   ONLY='smuggling|chunked' benches/compare/probes.sh            # some classes
#   FORMAT=markdown BUILD=0 benches/compare/probes.sh             # for an issue
#   benches/compare/probes.sh --list               # the probes and why, no run
#
# BASELINE adds "baseline", that binary with the same configuration, right
# after switchyard (as run.sh's A/B mode does); PROXIES chooses and orders the
# columns (switchyard, baseline, nginx, haproxy).
#
# The verdicts do not change the exit status: it is 1 only when the script
# itself fails (a proxy that does not start, a sanity check).
#
# Knobs (environment): PROXIES BASELINE BUILD ONLY FORMAT PROBE_TIMEOUT SY_PORT
# NGINX_PORT HAPROXY_PORT SY_BASE_PORT ORIGIN_PORTS RELAY_PORTS DENY_PORT KEEP_TMP.
set -euo pipefail

PROXIES=${PROXIES:-"switchyard nginx haproxy"} # the table's columns, in order
BASELINE=${BASELINE:-}         # another switchyard binary: add "baseline"
BUILD=${BUILD:-1}              # 0: use target/release/switchyard as it is
ONLY=${ONLY:-}                 # regex on "CLASS PROBE": run only those probes
FORMAT=${FORMAT:-text}         # text | markdown
PROBE_TIMEOUT=${PROBE_TIMEOUT:-3} # seconds to wait for an answer after the last byte sent
SY_PORT=${SY_PORT:-18120}
NGINX_PORT=${NGINX_PORT:-18121}
HAPROXY_PORT=${HAPROXY_PORT:-18122}
SY_BASE_PORT=${SY_BASE_PORT:-18123}
ORIGIN_PORTS=${ORIGIN_PORTS:-"19141 19142 19143"} # the sample origins
RELAY_PORTS=${RELAY_PORTS:-"19144 19145 19146"}   # the recording relays, one per origin
DENY_PORT=${DENY_PORT:-19147}  # the deny origin, for builds without `respond` (see below)
KEEP_TMP=${KEEP_TMP:-0}        # 1: keep the temp dir (configs, logs, the origins' request log)
PIN=0                          # common.sh's pinning is not used: nothing is measured

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PROG=probes
# shellcheck source=benches/compare/common.sh
. "$HERE/common.sh"
LIST=0
while [ $# -gt 0 ]; do
    case $1 in
        --list) LIST=1; shift ;;
        --only) ONLY=${2:?--only needs a regex}; shift 2 ;;
        --only=*) ONLY=${1#*=}; shift ;;
        --format) FORMAT=${2:?--format needs text or markdown}; shift 2 ;;
        --format=*) FORMAT=${1#*=}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
case $FORMAT in text|markdown) ;; *) die "FORMAT must be text or markdown: $FORMAT" ;; esac
require python3
if [ "$LIST" = 1 ]; then
    exec python3 "$HERE/probes.py" list ${ONLY:+--only "$ONLY"}
fi

declare -A PORT=([switchyard]=$SY_PORT [nginx]=$NGINX_PORT [haproxy]=$HAPROXY_PORT [baseline]=$SY_BASE_PORT)
read -r -a RUN <<<"$PROXIES"
# BASELINE adds its column right after switchyard's (before and after side by
# side), as in run.sh, unless PROXIES places it.
place_baseline
check_run "switchyard, baseline, nginx, haproxy"
if [ -n "$BASELINE" ] && { ! [ -f "$BASELINE" ] || ! [ -x "$BASELINE" ]; }; then
    die "BASELINE is not an executable file: $BASELINE"
fi
PROXIES=("${RUN[@]}")
declare -A PID=()
read -r -a ORIGINS <<<"$ORIGIN_PORTS"
read -r -a RELAYS <<<"$RELAY_PORTS"
if [ ${#ORIGINS[@]} -ne 3 ] || [ ${#RELAYS[@]} -ne 3 ]; then die "ORIGIN_PORTS and RELAY_PORTS need three ports each"; fi

# ---------------------------------------------------------------- tools, build
tools=()
for p in nginx haproxy; do if has "$p"; then tools+=("$p"); fi; done
install_missing ${tools[@]+"${tools[@]}"}
require ss curl
# The origins are the release binary's `switchyard origin`, so it is built even
# when switchyard itself is not probed.
[ "$BUILD" = 0 ] || build_switchyard
[ -x "$ROOT/target/release/switchyard" ] || die "no target/release/switchyard (BUILD=0 needs a built tree)"

ports=()
for p in "${PROXIES[@]}"; do ports+=("${PORT[$p]}"); done
check_ports SY_PORT/NGINX_PORT/HAPROXY_PORT/SY_BASE_PORT/ORIGIN_PORTS/RELAY_PORTS/DENY_PORT \
    "${ports[@]}" "${ORIGINS[@]}" "${RELAYS[@]}" "$DENY_PORT"
make_workdir probes
copy_switchyard "$TMP"
# The title: what each column ran.
rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ] || rev+=+dirty
TITLE="origins = switchyard $rev"
! has switchyard || TITLE="switchyard = $rev (sha256 $(sha256sum <"$SY" | cut -c1-12))"
if has baseline; then
    copy_baseline "$BASELINE" "$TMP/baseline"
    TITLE+=", baseline = $BASELINE (sha256 $(sha256sum <"$SY_BASE" | cut -c1-12))"
    ! cmp -s "$SY" "$SY_BASE" || log "NOTE: baseline is the same binary as switchyard"
fi
! has nginx || TITLE+=", $(nginx -v 2>&1 | sed 's/^nginx version: //')"
! has haproxy || TITLE+=", HAProxy $(haproxy -v 2>/dev/null | awk 'NR == 1 {print $3}')"

# ------------------------------------------------------ origins and the relays
log "starting origins on $ORIGIN_PORTS, recording relays on $RELAY_PORTS"
for i in 0 1 2; do
    launch "origin$((i + 1))" "${ORIGINS[i]}" "$SY" origin --listen "127.0.0.1:${ORIGINS[i]}" --name "origin$((i + 1))"
done
REQLOG=$TMP/origin-requests.jsonl
: >"$REQLOG"
pairs=()
for i in 0 1 2; do pairs+=(--pair "${RELAYS[i]}:${ORIGINS[i]}"); done
launch relay "${RELAYS[0]}" python3 "$HERE/probes.py" relay "${pairs[@]}" --deny "$DENY_PORT" --log "$REQLOG"
for p in "${RELAYS[@]:1}" "$DENY_PORT"; do wait_port "$p" relay "${PID[relay]}" "$TMP/relay.log"; done

# ------------------------------------------------------------------- proxies
# The proxies' @ORIGIN_n@ are the relays.
render_probes() { ORIGIN_PORTS=$RELAY_PORTS render "$@"; }
log "starting$(for p in "${PROXIES[@]}"; do printf ' %s :%s' "$p" "${PORT[$p]}"; done)"
for p in switchyard baseline; do
    has "$p" || continue
    bin=$SY dir=$TMP/$p.d # TMP/switchyard is the binary
    [ "$p" = switchyard ] || bin=$SY_BASE
    mkdir -p "$dir"
    render_probes "$HERE/probes-switchyard.toml.tmpl" "$dir/switchyard.toml" "$dir" "${PORT[$p]}"
    if ! err=$("$bin" check --config "$dir/switchyard.toml" 2>&1 >/dev/null); then
        # Builds from before route actions have no `respond`: their /admin/
        # route goes to an upstream of its own, the relay's deny origin (403 to
        # everything, not the pool), which keeps the routing the same.
        [[ $err == *respond* ]] || die "$p rejected $dir/switchyard.toml: $err"
        log "NOTE: $p has no respond action; its /admin/ route proxies to the deny origin :$DENY_PORT"
        render_probes "$HERE/probes-switchyard.toml.tmpl" "$dir/switchyard.toml" "$dir" "${PORT[$p]}" \
            's|^respond = .*|upstream = "deny"|' \
            "\$a\\\n[upstream.deny]\nservers = [{ addr = \"127.0.0.1:$DENY_PORT\" }]"
        "$bin" check --config "$dir/switchyard.toml" >/dev/null || die "$p rejected $dir/switchyard.toml"
    fi
    RUST_LOG=warn launch "$p" "${PORT[$p]}" "$bin" run --config "$dir/switchyard.toml"
done
if has nginx; then
    mkdir -p "$TMP/nginx"
    render_probes "$HERE/probes-nginx.conf.tmpl" "$TMP/nginx/nginx.conf" "$TMP/nginx" "$NGINX_PORT"
    nginx -t -q -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" \
        || die "nginx rejected $TMP/nginx/nginx.conf"
    launch nginx "$NGINX_PORT" nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log"
fi
if has haproxy; then
    render_probes "$HERE/probes-haproxy.cfg.tmpl" "$TMP/haproxy.cfg" "$TMP" "$HAPROXY_PORT"
    haproxy -c -q -f "$TMP/haproxy.cfg" || die "haproxy rejected $TMP/haproxy.cfg"
    launch haproxy "$HAPROXY_PORT" haproxy -db -f "$TMP/haproxy.cfg"
fi

# ------------------------------------------------------------- sanity checks
# The routes work and the relays record: otherwise every verdict would be
# about the setup, not the proxy.
log "checking the routes: GET /public/x → 200 from an origin, GET /admin/x → 403"
for p in "${PROXIES[@]}"; do
    base="http://127.0.0.1:${PORT[$p]}"
    pub=$(curl -sS -o /dev/null -w '%{http_code}' "$base/public/x") || die "$p: curl failed"
    adm=$(curl -sS -o /dev/null -w '%{http_code}' "$base/admin/x") || die "$p: curl failed"
    printf '  %-10s /public/x %s, /admin/x %s\n' "$p" "$pub" "$adm" >&2
    if [ "$pub" != 200 ] || [ "$adm" != 403 ]; then die "$p: expected 200 and 403"; fi
done
recorded=$(grep -c '"target": "/public/x"' "$REQLOG" || true)
[ "$recorded" -ge ${#PROXIES[@]} ] || die "the relays recorded $recorded of ${#PROXIES[@]} requests; see $REQLOG"

# -------------------------------------------------------------------- probes
args=()
for p in "${PROXIES[@]}"; do args+=(--proxy "$p=${PORT[$p]}"); done
echo
echo "Probes: $TITLE"
python3 "$HERE/probes.py" run "${args[@]}" --log "$REQLOG" --csv "$CSV" \
    --timeout "$PROBE_TIMEOUT" --format "$FORMAT" ${ONLY:+--only "$ONLY"}
echo "raw results: ${CSV#"$ROOT"/} (one row per probe and proxy, with the first bytes of each answer)"

# A proxy that died during the probes answered "refused" from then on: say so.
for p in "${PROXIES[@]}"; do
    if ! kill -0 "${PID[$p]}" 2>/dev/null; then
        wait "${PID[$p]}" 2>/dev/null && rc=0 || rc=$?
        unset "LIVE[${PID[$p]}]"
        log "WARNING: $p exited during the probes (status $rc); the end of its log:"
        tail -n 20 "$TMP/$p.log" >&2 || true
        KEEP_TMP=1
    fi
done
