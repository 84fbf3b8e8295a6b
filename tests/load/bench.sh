#!/usr/bin/env bash
# Load benchmark for cronium-runtime (run by hand; not part of the test suite).
# See tests/load/README.md. Everything runs on 127.0.0.1 on free ports; every process this
# script starts is stopped on exit. The exit code is 0 unless the script itself could not run
# (build failure, missing tool): targets that are missed are reported, not failed.
#
# Environment:
#   BENCH_SECONDS   duration of each wrk run (default 10)
#   BENCH_ONLY      comma list of scenarios (default: all): health,variables,startup,conns,production,workers
#                   (the nginx ceiling runs whenever health or variables does; `nginx` alone works too)
#   BENCH_STARTS    number of starts for the start-time median (default 20)
#   BENCH_CONNS     number of idle keep-alive connections (default 10000)
#   BENCH_KEEP=1    keep the temp dir (logs, wrk outputs) instead of deleting it
#   BENCH_BUILD_DIR release build directory to use (default build-release)
#
# Adding a scenario: write `scenario_NAME` (use start_service / run_wrk / record), add NAME to
# SCENARIOS below, and add its lines to print_results / print_summary.

set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BUILD_DIR=${BENCH_BUILD_DIR:-$REPO/build-release}   # BENCH_BUILD_DIR: another build directory
BIN="$BUILD_DIR/cronium-runtime"
PY=/usr/bin/python3
HELPER="$HERE/bench_helper.py"

DURATION=${BENCH_SECONDS:-10}
ONLY=${BENCH_ONLY:-all}
STARTS=${BENCH_STARTS:-20}
NCONNS=${BENCH_CONNS:-10000}
KEEP=${BENCH_KEEP:-0}
# "threads connections" pairs; every wrk scenario runs at each of them.
LEVELS=("1 50" "2 256")
SCENARIOS=(health variables startup conns production workers)

JWT_SECRET_BENCH="bench-secret-0123456789abcdef0123456789abcdef"
EXEC_ID=bench
VAR_KEY=bench
VAR_BODY='{"value":{"n":1,"s":"hello"}}'
HUGE=1000000000

declare -A R=()       # results: R[name:conns:field], R[misc field]
WRK_ROWS=()           # "name conns" in the order they ran
PROBLEMS=()           # free text, printed at the end
PIDS=()               # every background process we started

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fatal() { log "FATAL: $*"; exit 1; }
problem() { PROBLEMS+=("$*"); log "PROBLEM: $*"; }

# --- process handling ------------------------------------------------------------------------

stop_pid() { # stop_pid PID: TERM, up to 5 s, then KILL; sets STOP_STATUS
    local pid=$1 i
    STOP_STATUS=
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; STOP_STATUS=$?; return 0; }
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    STOP_STATUS=$?
}

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null && stop_pid "$pid"
    done
    if [[ -n "${WORK:-}" && -d "$WORK" ]]; then
        if [[ "$KEEP" == 1 ]]; then log "logs kept in $WORK"; else rm -rf "$WORK"; fi
    fi
}

start_bg() { # start_bg NAME CMD...: stdout/stderr to $WORK/NAME.{out,err}; sets BG_PID
    local name=$1
    shift
    "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    BG_PID=$!
    PIDS+=("$BG_PID")
}

free_port() { "$PY" "$HELPER" freeport | sed -n 's/^port=//p'; }

kv_into() { # kv_into PREFIX < key=value lines: R[PREFIX:key]=value
    local prefix=$1 k v
    while IFS='=' read -r k v; do
        [[ -n "$k" ]] && R["$prefix:$k"]=$v
    done
}

vmrss_kb() { # vmrss_kb PID: VmRSS in kB, empty if the process is gone
    local k v u
    [[ -r /proc/$1/status ]] || return 0
    while read -r k v u; do
        if [[ "$k" == VmRSS: ]]; then echo "$v"; return 0; fi
    done <"/proc/$1/status"
}

rss_sampler() { # rss_sampler PID FILE: keeps the peak VmRSS (kB) in FILE until stopped
    local pid=$1 file=$2 max=0 v
    while [[ -r /proc/$pid/status ]]; do
        v=$(vmrss_kb "$pid")
        if [[ -n "$v" ]] && ((v > max)); then
            max=$v
            echo "$max" >"$file"
        fi
        sleep 0.2
    done
}

# --- the service -----------------------------------------------------------------------------

SVC_PID=
SVC_PORT=
SVC_CMD=
start_service() { # start_service NAME [ENV=VALUE...] [-- ARGS...]: the service on a free port
    local name=$1                #   ARGS default to --dev; give `--` alone for none
    shift
    SVC_PORT=$(free_port)
    local envs=(PORT="$SVC_PORT" HOST=127.0.0.1 LOG_LEVEL=warn) args=(--dev)
    while (($#)); do
        if [[ "$1" == -- ]]; then
            shift
            args=("$@")
            break
        fi
        envs+=("$1")
        shift
    done
    SVC_CMD="${envs[*]} $BIN ${args[*]}"
    start_bg "$name" env TMPDIR="$WORK" "${envs[@]}" "$BIN" "${args[@]}"
    SVC_PID=$BG_PID
    if ! "$PY" "$HELPER" wait-http "$SVC_PORT" /health 10 >/dev/null; then
        problem "$name: service did not answer GET /health after start; stderr: $(tail -c 600 "$WORK/$name.err")"
        return 1
    fi
    log "$name: service pid $SVC_PID on port $SVC_PORT"
}

stop_service() { # stop_service NAME: stops SVC_PID, reports an unclean exit
    local name=$1
    [[ -n "$SVC_PID" ]] || return 0
    if ! kill -0 "$SVC_PID" 2>/dev/null; then
        wait "$SVC_PID" 2>/dev/null
        problem "$name: service had already exited (status $?) before the scenario ended; stderr tail: $(tail -c 600 "$WORK/$name.err")"
    else
        stop_pid "$SVC_PID"
        [[ "$STOP_STATUS" == 0 ]] || problem "$name: service exit status $STOP_STATUS after SIGTERM (expected 0); stderr tail: $(tail -c 400 "$WORK/$name.err")"
    fi
    SVC_PID=
}

service_alive_after() { # service_alive_after WHAT REPRO: checks the service survived and still answers
    local what=$1 repro=$2
    if ! kill -0 "$SVC_PID" 2>/dev/null; then
        wait "$SVC_PID" 2>/dev/null
        local st=$?
        problem "service died during $what (wait status $st). Reproduce: $SVC_CMD & then: $repro"
        SVC_PID=
        return 1
    fi
    if ! "$PY" "$HELPER" wait-http "$SVC_PORT" /health 5 >/dev/null; then
        problem "service stopped answering GET /health after $what. Reproduce: $SVC_CMD & then: $repro"
        return 1
    fi
}

# --- wrk -------------------------------------------------------------------------------------

run_wrk() { # run_wrk NAME URL THREADS CONNS PID_TO_SAMPLE|- [LUA]
    local name=$1 url=$2 threads=$3 conns=$4 pid=$5 lua=${6:-}
    local logf="$WORK/wrk-$name-c$conns.log" peakf="$WORK/peak-$name-c$conns" sampler=
    local args=(-t"$threads" -c"$conns" -d"${DURATION}s" --latency)
    [[ -n "$lua" ]] && args+=(-s "$HERE/$lua")
    log "wrk $name ${args[*]} $url"
    if [[ "$pid" != - ]]; then
        rss_sampler "$pid" "$peakf" &
        sampler=$!
        PIDS+=("$sampler")
    fi
    wrk "${args[@]}" "$url" >"$logf" 2>&1
    local rc=$?
    if [[ -n "$sampler" ]]; then
        kill "$sampler" 2>/dev/null
        wait "$sampler" 2>/dev/null
        R["$name:$conns:peak_rss_kb"]=$(cat "$peakf" 2>/dev/null || echo "")
    fi
    WRK_ROWS+=("$name $conns")
    R["$name:$conns:cmd"]="wrk ${args[*]} $url"
    if ((rc != 0)); then
        problem "$name -c$conns: wrk exited $rc: $(tail -c 300 "$logf")"
        return 1
    fi
    if ! "$PY" "$HELPER" parse-wrk "$logf" >"$logf.kv"; then
        problem "$name -c$conns: could not parse wrk output: $(tail -c 300 "$logf")"
        return 1
    fi
    kv_into "$name:$conns" <"$logf.kv"
    if [[ "${R[$name:$conns:non2xx]}" != 0 ]]; then
        problem "$name -c$conns: ${R[$name:$conns:non2xx]} responses were not 2xx/3xx"
    fi
    if [[ "${R[$name:$conns:sock_errors]}" != 0 ]]; then
        problem "$name -c$conns: wrk socket errors ${R[$name:$conns:sock_detail]}"
    fi
}

# --- scenarios -------------------------------------------------------------------------------

NGINX_DONE=0
scenario_nginx() { # the ceiling: Debian's nginx, one worker, `return 200` with a 54-byte body
    ((NGINX_DONE)) && return 0
    NGINX_DONE=1
    command -v nginx >/dev/null || { problem "nginx not installed (nginx-light): no ceiling"; return 1; }
    local dir="$WORK/nginx" port lvl
    port=$(free_port)
    mkdir -p "$dir/tmp"
    sed -e "s|@PREFIX@|$dir|g" -e "s|@PORT@|$port|g" "$HERE/nginx.conf.in" >"$dir/nginx.conf"
    start_bg nginx nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" -g 'daemon off;'
    local pid=$BG_PID
    if ! "$PY" "$HELPER" wait-http "$port" /health 10 >/dev/null; then
        problem "nginx did not start: $(cat "$WORK/nginx.err" "$dir/error.log" 2>/dev/null | tail -c 600)"
        stop_pid "$pid"
        return 1
    fi
    for lvl in "${LEVELS[@]}"; do
        set -- $lvl
        run_wrk nginx "http://127.0.0.1:$port/health" "$1" "$2" -
    done
    stop_pid "$pid"
}

scenario_health() {
    scenario_nginx
    start_service health || { stop_service health; return 1; }
    sleep 0.5
    R[idle_rss_kb]=$(vmrss_kb "$SVC_PID")
    kv_into idle < <("$PY" "$HELPER" rss "$SVC_PID")
    local lvl
    for lvl in "${LEVELS[@]}"; do
        set -- $lvl
        run_wrk health "http://127.0.0.1:$SVC_PORT/health" "$1" "$2" "$SVC_PID"
        service_alive_after "health -c$2" "${R[health:$2:cmd]}" || break
    done
    R[health_rss_after_kb]=$(vmrss_kb "$SVC_PID")
    stop_service health
}

scenario_variables() {
    scenario_nginx
    local token
    token=$(JWT_SECRET="$JWT_SECRET_BENCH" "$BIN" token --execution-id "$EXEC_ID" --user-id u1 2>"$WORK/token.err") ||
        { problem "token minting failed: $(cat "$WORK/token.err")"; return 1; }
    start_service variables JWT_SECRET="$JWT_SECRET_BENCH" RATE_LIMIT_PER_MIN=$HUGE RATE_LIMIT_BURST=$HUGE ||
        { stop_service variables; return 1; }
    local url="http://127.0.0.1:$SVC_PORT/executions/$EXEC_ID/variables/$VAR_KEY" code
    code=$(curl -sS -o "$WORK/put.body" -w '%{http_code}' -X PUT -H "Authorization: Bearer $token" \
        -H 'Content-Type: application/json' --data "$VAR_BODY" "$url")
    if [[ "$code" != 200 ]]; then
        problem "variables: first PUT $url answered $code: $(cat "$WORK/put.body")"
        stop_service variables
        return 1
    fi
    code=$(curl -sS -o "$WORK/get.body" -w '%{http_code}' -H "Authorization: Bearer $token" "$url")
    if [[ "$code" != 200 ]] || ! grep -q '"hello"' "$WORK/get.body"; then
        problem "variables: GET after PUT answered $code: $(cat "$WORK/get.body")"
    fi
    export BENCH_TOKEN=$token # read by the wrk Lua scripts
    local lvl kind
    for kind in get put; do
        for lvl in "${LEVELS[@]}"; do
            set -- $lvl
            run_wrk "var_$kind" "$url" "$1" "$2" "$SVC_PID" "${kind}_variable.lua"
            service_alive_after "var_$kind -c$2" "BENCH_TOKEN=<token for execution $EXEC_ID, user u1, same JWT_SECRET> ${R[var_$kind:$2:cmd]}" ||
                { stop_service variables; return 1; }
        done
    done
    code=$(curl -sS -o "$WORK/get2.body" -w '%{http_code}' -H "Authorization: Bearer $token" "$url")
    if [[ "$code" != 200 ]] || ! grep -q '"hello"' "$WORK/get2.body"; then
        problem "variables: GET after the load answered $code: $(cat "$WORK/get2.body")"
    fi
    R[variables_rss_after_kb]=$(vmrss_kb "$SVC_PID")
    stop_service variables
}

wait_port() { # wait_port PORT: up to 5 s for something to accept on 127.0.0.1:PORT
    local i
    for ((i = 0; i < 100; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# audit_figures NAME: the audit counters and the GETs answered, from the service's /metrics.
audit_figures() {
    local m
    m=$(curl -s "http://127.0.0.1:$SVC_PORT/metrics")
    R[$1:answered]=$(awk 'index($0, "cronium_runtime_http_requests_total{route=\"/executions/{id}/variables/{key}\"") == 1 {n += $2} END {print n + 0}' <<<"$m")
    local sink res
    for sink in backend file; do
        for res in sent written dropped failed; do
            R[$1:$sink:$res]=$(awk -v k="cronium_runtime_audit_events_total{sink=\"$sink\",result=\"$res\"}" \
                'index($0, k " ") == 1 {print $2}' <<<"$m")
        done
    done
}

# Production mode: cached GET of a variable against a real redis-server, then the same GET
# with no cache configured so every request goes to the backend fake (cache misses).
valkey_counts() { # valkey_counts PREFIX RPORT: what Valkey saw since CONFIG RESETSTAT
    # valkey_calls: every command Valkey counted, including the ones the rate-limit script runs
    # inside each EVALSHA (TIME, GET, SET: one TIME per run, and every run here is allowed);
    # valkey_sent: the commands the service sent (valkey_calls less 3 per script run);
    # valkey_reads: read events on Valkey's client sockets, i.e. at most the round trips.
    local stats
    stats=$(redis-cli -p "$2" INFO all | tr -d '\r')
    R["$1:valkey_calls"]=$(awk -F'[:=,]' '/^cmdstat_/ {n += $3} END {print n + 0}' <<<"$stats")
    R["$1:valkey_sent"]=$(awk -F'[:=,]' '/^cmdstat_/ {n += $3} /^cmdstat_time:/ {t = $3} END {print n - 3 * t}' <<<"$stats")
    R["$1:valkey_reads"]=$(awk -F: '/^total_reads_processed:/ {print $2 + 0}' <<<"$stats")
}

scenario_production() {
    scenario_nginx
    command -v redis-server >/dev/null || { problem "production: redis-server not found"; return 1; }
    local rport fport token url code
    rport=$(free_port)
    start_bg redis redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no
    wait_port "$rport" || { problem "production: redis-server did not listen"; return 1; }
    fport=$(free_port)
    cat >"$WORK/seed.json" <<EOS
{"executions":[{"executionId":"$EXEC_ID","userId":"u1","jobId":"j1","metadata":{"input":{}}}],
 "variables":[{"userId":"u1","key":"$VAR_KEY","value":"{\"n\":1,\"s\":\"hello\"}"}]}
EOS
    start_bg fake "$PY" "$REPO/tests/fakes/backend.py" --host 127.0.0.1 --port "$fport" --token bench-backend \
        --seed "$WORK/seed.json"
    wait_port "$fport" || { problem "production: the backend fake did not listen"; return 1; }
    token=$(JWT_SECRET="$JWT_SECRET_BENCH" "$BIN" token --execution-id "$EXEC_ID" 2>"$WORK/token.err") ||
        { problem "token minting failed: $(cat "$WORK/token.err")"; return 1; }
    export BENCH_TOKEN=$token
    local common=(JWT_SECRET="$JWT_SECRET_BENCH" RATE_LIMIT_PER_MIN=$HUGE RATE_LIMIT_BURST=$HUGE
                  BACKEND_URL="http://127.0.0.1:$fport" BACKEND_TOKEN=bench-backend)
    # 1. cached: one warm-up GET fills the cache, then count Valkey commands per request.
    # Reads are not audited here (AUDIT_READS=false): with them, every GET also POSTs an audit
    # event to the Python fake, which then takes most of a core away from the two under test.
    # The audited case runs once more at -c50 below, as prod_audit.
    start_service prod_cached "${common[@]}" AUDIT_READS=false VALKEY_URL="redis://127.0.0.1:$rport" -- ||
        { stop_service prod_cached; return 1; }
    url="http://127.0.0.1:$SVC_PORT/executions/$EXEC_ID/variables/$VAR_KEY"
    code=$(curl -sS -o "$WORK/pget.body" -w '%{http_code}' -H "Authorization: Bearer $token" "$url")
    if [[ "$code" != 200 ]] || ! grep -q '"hello"' "$WORK/pget.body"; then
        problem "production: warm-up GET answered $code: $(cat "$WORK/pget.body")"
        stop_service prod_cached
        return 1
    fi
    local lvl calls
    for lvl in "${LEVELS[@]}"; do
        set -- $lvl
        redis-cli -p "$rport" CONFIG RESETSTAT >/dev/null
        run_wrk prod_hit "$url" "$1" "$2" "$SVC_PID" get_variable.lua
        valkey_counts "prod_hit:$2" "$rport"
        service_alive_after "prod_hit -c$2" "${R[prod_hit:$2:cmd]}" || { stop_service prod_cached; return 1; }
    done
    stop_service prod_cached
    # The same cached GET with the rate limits in each process (security.rateLimitStore local):
    # the cost of the Valkey limiter is the difference to prod_hit.
    start_service prod_hit_local "${common[@]}" AUDIT_READS=false RATE_LIMIT_STORE=local \
        VALKEY_URL="redis://127.0.0.1:$rport" -- || { stop_service prod_hit_local; return 1; }
    url="http://127.0.0.1:$SVC_PORT/executions/$EXEC_ID/variables/$VAR_KEY"
    set -- ${LEVELS[0]}
    redis-cli -p "$rport" CONFIG RESETSTAT >/dev/null
    run_wrk prod_hit_local "$url" "$1" "$2" "$SVC_PID" get_variable.lua
    valkey_counts "prod_hit_local:$2" "$rport"
    stop_service prod_hit_local
    # The audited runs use the local rate limiter, so that set beside prod_hit_local they show
    # what auditing costs (prod_hit vs prod_hit_local shows what the Valkey limiter costs).
    start_service prod_audit "${common[@]}" RATE_LIMIT_STORE=local VALKEY_URL="redis://127.0.0.1:$rport" -- ||
        { stop_service prod_audit; return 1; }
    url="http://127.0.0.1:$SVC_PORT/executions/$EXEC_ID/variables/$VAR_KEY"
    set -- ${LEVELS[0]}
    run_wrk prod_audit "$url" "$1" "$2" "$SVC_PID" get_variable.lua
    audit_figures prod_audit
    stop_service prod_audit
    # The same GET with the JSON-lines sink only (audit.file, audit.backend off): after the
    # run and SIGTERM, the sum of "count" over the file must equal the GETs the service
    # answered (its own http_requests_total), i.e. 0 lost.
    start_service prod_audit_file "${common[@]}" RATE_LIMIT_STORE=local VALKEY_URL="redis://127.0.0.1:$rport" \
        AUDIT_BACKEND=false AUDIT_FILE="$WORK/audit.jsonl" -- || { stop_service prod_audit_file; return 1; }
    url="http://127.0.0.1:$SVC_PORT/executions/$EXEC_ID/variables/$VAR_KEY"
    set -- ${LEVELS[0]}
    run_wrk prod_audit_file "$url" "$1" "$2" "$SVC_PID" get_variable.lua
    audit_figures prod_audit_file
    stop_service prod_audit_file
    R[prod_audit_file:in_file]=$("$PY" -c 'import json, sys
print(sum(int(json.loads(l).get("count", 1)) for l in open(sys.argv[1])))' "$WORK/audit.jsonl" 2>/dev/null)
    R[prod_audit_file:lines]=$(wc -l <"$WORK/audit.jsonl" 2>/dev/null)
    # 2. misses: no cache, every GET reaches the backend fake (concurrent GETs share a request).
    start_service prod_miss "${common[@]}" -- || { stop_service prod_miss; return 1; }
    url="http://127.0.0.1:$SVC_PORT/executions/$EXEC_ID/variables/$VAR_KEY"
    set -- ${LEVELS[0]}
    run_wrk prod_miss "$url" "$1" "$2" "$SVC_PID" get_variable.lua
    R[prod_miss:backend_gets]=$(curl -s "http://127.0.0.1:$SVC_PORT/metrics" |
        awk '/^cronium_runtime_backend_requests_total\{op="get_variable"/ {n += $2} END {print n + 0}')
    R[prod_miss:coalesced]=$(curl -s "http://127.0.0.1:$SVC_PORT/metrics" |
        awk '/^cronium_runtime_backend_coalesced_total/ {print $2}')
    stop_service prod_miss
}

# server.workers 1 vs 2 (production mode: dev mode refuses more than one worker), on /health
# and on a cached GET (Valkey, reads not audited). wrk, redis-server, the backend fake and the
# workers all share this machine's CPUs, so on 2 CPUs the second worker mostly competes with
# wrk: read the figures as "what the supervisor and the port sharing cost", not as scaling.
scenario_workers() {
    command -v redis-server >/dev/null || { problem "workers: redis-server not found"; return 1; }
    local rport fport token url code w lvl
    rport=$(free_port)
    start_bg wredis redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no
    wait_port "$rport" || { problem "workers: redis-server did not listen"; return 1; }
    fport=$(free_port)
    cat >"$WORK/wseed.json" <<EOS
{"executions":[{"executionId":"$EXEC_ID","userId":"u1","jobId":"j1","metadata":{"input":{}}}],
 "variables":[{"userId":"u1","key":"$VAR_KEY","value":"{\"n\":1,\"s\":\"hello\"}"}]}
EOS
    start_bg wfake "$PY" "$REPO/tests/fakes/backend.py" --host 127.0.0.1 --port "$fport" --token bench-backend \
        --seed "$WORK/wseed.json"
    wait_port "$fport" || { problem "workers: the backend fake did not listen"; return 1; }
    token=$(JWT_SECRET="$JWT_SECRET_BENCH" "$BIN" token --execution-id "$EXEC_ID" 2>"$WORK/token.err") ||
        { problem "token minting failed: $(cat "$WORK/token.err")"; return 1; }
    export BENCH_TOKEN=$token
    for w in 1 2; do
        start_service "workers$w" WORKERS=$w JWT_SECRET="$JWT_SECRET_BENCH" RATE_LIMIT_PER_MIN=$HUGE \
            RATE_LIMIT_BURST=$HUGE BACKEND_URL="http://127.0.0.1:$fport" BACKEND_TOKEN=bench-backend \
            AUDIT_READS=false VALKEY_URL="redis://127.0.0.1:$rport" -- || { stop_service "workers$w"; return 1; }
        sleep 1.2   # every worker listening (the first /health proves only one)
        url="http://127.0.0.1:$SVC_PORT/executions/$EXEC_ID/variables/$VAR_KEY"
        code=$(curl -sS -o "$WORK/wget.body" -w '%{http_code}' -H "Authorization: Bearer $token" "$url")
        if [[ "$code" != 200 ]]; then
            problem "workers$w: warm-up GET answered $code: $(cat "$WORK/wget.body")"
            stop_service "workers$w"
            return 1
        fi
        for lvl in "${LEVELS[@]}"; do
            set -- $lvl
            run_wrk "w${w}_health" "http://127.0.0.1:$SVC_PORT/health" "$1" "$2" -
            run_wrk "w${w}_get" "$url" "$1" "$2" - get_variable.lua
            service_alive_after "workers$w -c$2" "${R[w${w}_get:$2:cmd]}" || { stop_service "workers$w"; return 1; }
        done
        sleep 1.1   # let every worker publish before the scrape
        R["workers$w:health_total"]=$(curl -s "http://127.0.0.1:$SVC_PORT/metrics" |
            awk '/^cronium_runtime_http_requests_total\{route="\/health"/ {n += $2} END {print n + 0}')
        stop_service "workers$w"
    done
}

scenario_startup() {
    log "startup: $STARTS starts, exec to first GET /health 200"
    if ! "$PY" "$HELPER" startup "$BIN" "$STARTS" "$WORK" >"$WORK/startup.kv" 2>"$WORK/startup.err"; then
        problem "startup measurement failed: $(tail -c 600 "$WORK/startup.err"); service stderr: $(tail -c 400 "$WORK/startup-stderr.log" 2>/dev/null)"
        return 1
    fi
    kv_into startup <"$WORK/startup.kv"
}

scenario_conns() {
    start_service conns MAX_CONNECTIONS=20000 || { stop_service conns; return 1; }
    log "conns: opening $NCONNS keep-alive connections (each made one GET /health)"
    if ! "$PY" "$HELPER" idle-conns "$SVC_PORT" "$SVC_PID" "$NCONNS" >"$WORK/conns.kv" 2>"$WORK/conns.err"; then
        problem "conns: $(tail -c 600 "$WORK/conns.err"). Reproduce: ulimit -n 20000; $SVC_CMD & then /usr/bin/python3 tests/load/bench_helper.py idle-conns PORT PID $NCONNS"
    fi
    kv_into conns <"$WORK/conns.kv"
    [[ "${R[conns:closed_by_server]:-0}" == 0 ]] ||
        problem "conns: the server closed ${R[conns:closed_by_server]} of the idle connections within a second"
    [[ "${R[conns:reuse_health_status]:-0}" == 200 ]] ||
        problem "conns: GET /health on an old idle connection answered '${R[conns:reuse_health_status]:-none}'"
    [[ "${R[conns:after_close_health_status]:-0}" == 200 ]] ||
        problem "conns: GET /health after closing the connections answered '${R[conns:after_close_health_status]:-none}'"
    stop_service conns
}

# --- report ----------------------------------------------------------------------------------

mb() { [[ -n "${1:-}" ]] && awk -v k="$1" 'BEGIN{printf "%.1f MB", k/1024}' || echo "n/a"; }
ratio() { # ratio A B: A/B with 2 decimals, or n/a
    [[ -n "${1:-}" && -n "${2:-}" && "${2:-0}" != 0 ]] && awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}' || echo "n/a"
}
verdict() { # verdict VALUE OP LIMIT: PASS, MISS, or n/a when VALUE is empty / n/a
    local v=${1:-} op=$2 lim=$3
    [[ -z "$v" || "$v" == n/a ]] && { echo "n/a"; return; }
    awk -v v="$v" -v l="$lim" -v op="$op" 'BEGIN{ok = (op == ">=") ? (v >= l) : (v <= l); print ok ? "PASS" : "MISS"}'
}

print_results() {
    local row name conns
    echo
    echo "== wrk results (${DURATION}s each, --latency; 127.0.0.1; $(nproc) CPUs shared by wrk and the server) =="
    printf '%-10s %6s %11s %9s %9s %8s %8s %10s\n' scenario conns "req/s" "p50 ms" "p99 ms" "vs nginx" "non-2xx" "peak RSS"
    for row in "${WRK_ROWS[@]}"; do
        set -- $row
        name=$1 conns=$2
        printf '%-10s %6s %11s %9s %9s %8s %8s %10s\n' "$name" "$conns" "${R[$name:$conns:rps]:-n/a}" \
            "${R[$name:$conns:p50_ms]:-n/a}" "${R[$name:$conns:p99_ms]:-n/a}" \
            "$([[ $name == nginx ]] && echo - || ratio "${R[$name:$conns:rps]:-}" "${R[nginx:$conns:rps]:-}")" \
            "${R[$name:$conns:non2xx]:-n/a}" "$([[ $name == nginx ]] && echo - || mb "${R[$name:$conns:peak_rss_kb]:-}")"
    done
    echo
    echo "== memory and start =="
    [[ -n "${R[idle_rss_kb]:-}" ]] && echo "idle RSS (dev mode, after one /health): $(mb "${R[idle_rss_kb]}")" \
        "(anon $(mb "${R[idle:rssanon_kb]:-}"), file-backed $(mb "${R[idle:rssfile_kb]:-}"))"
    [[ -n "${R[health_rss_after_kb]:-}" ]] && echo "RSS after the /health load: $(mb "${R[health_rss_after_kb]}")"
    [[ -n "${R[variables_rss_after_kb]:-}" ]] && echo "RSS after the variable load: $(mb "${R[variables_rss_after_kb]}")"
    [[ -n "${R[startup:median_ms]:-}" ]] && echo "start (exec to first /health 200), ${R[startup:runs]} runs:" \
        "median ${R[startup:median_ms]} ms, min ${R[startup:min_ms]} ms, max ${R[startup:max_ms]} ms"
    [[ -n "${R[startup:version_median_ms]:-}" ]] && echo "  reference: \`cronium-runtime --version\` exec to exit median" \
        "${R[startup:version_median_ms]} ms, /bin/true ${R[startup:true_median_ms]} ms (process + library loading floor)"
    if [[ -n "${R[conns:opened]:-}" ]]; then
        echo "idle keep-alive connections: ${R[conns:opened]} opened in ${R[conns:open_seconds]:-?} s;" \
            "RSS before $(mb "${R[conns:rss_before_kb]:-}"), holding them $(mb "${R[conns:rss_held_kb]:-}")" \
            "(anon $(mb "${R[conns:rssanon_held_kb]:-}")), after closing $(mb "${R[conns:rss_after_close_kb]:-}")"
        echo "  while held: fresh GET /health -> ${R[conns:fresh_health_status]:-?} in ${R[conns:fresh_health_ms]:-?} ms;" \
            "old connection reused -> ${R[conns:reuse_health_status]:-?}; closed by server: ${R[conns:closed_by_server]:-?}"
    fi
}

print_summary() {
    local r_health r_get v_conns
    r_health=$(ratio "${R[health:50:rps]:-}" "${R[nginx:50:rps]:-}")
    r_get=$(ratio "${R[var_get:50:rps]:-}" "${R[nginx:50:rps]:-}")
    echo
    echo "== summary =="
    printf '%-46s %-22s %-12s %s\n' target measured limit verdict
    if want health; then
        printf '%-46s %-22s %-12s %s\n' "/health req/s vs nginx at -c50" "$r_health" ">= 0.90" "$(verdict "$r_health" '>=' 0.9)"
        local idle_mb=n/a
        [[ -n "${R[idle_rss_kb]:-}" ]] && idle_mb=$(awk -v k="${R[idle_rss_kb]}" 'BEGIN{printf "%.1f", k/1024}')
        printf '%-46s %-22s %-12s %s\n' "idle RSS (MB)" "$idle_mb" "<= 4" "$(verdict "$idle_mb" '<=' 4)"
    fi
    if want startup; then
        printf '%-46s %-22s %-12s %s\n' "start to first /health 200 (median ms)" "${R[startup:median_ms]:-n/a}" "<= 10" \
            "$(verdict "${R[startup:median_ms]:-}" '<=' 10)"
    fi
    if want conns; then
        local held_mb=n/a ok=n/a
        [[ -n "${R[conns:rss_held_kb]:-}" && "${R[conns:opened]:-0}" == "$NCONNS" ]] &&
            held_mb=$(awk -v k="${R[conns:rss_held_kb]}" 'BEGIN{printf "%.1f", k/1024}')
        v_conns=$(verdict "$held_mb" '<=' 64)
        [[ "$v_conns" == PASS && "${R[conns:fresh_health_status]:-}" != 200 ]] && v_conns=MISS
        printf '%-46s %-22s %-12s %s\n' "$NCONNS idle conns: RSS (MB), /health answers" \
            "$held_mb, /health ${R[conns:fresh_health_status]:-n/a}" "<= 64, 200" "$v_conns"
    fi
    if want variables; then
        printf '%-46s %-22s %-12s %s\n' "GET variable req/s vs nginx at -c50" "$r_get" ">= 0.70" "$(verdict "$r_get" '>=' 0.7)"
    fi
    if want production; then
        local r_hit per
        r_hit=$(ratio "${R[prod_hit:50:rps]:-}" "${R[nginx:50:rps]:-}")
        printf '%-46s %-22s %-12s %s\n' "cached GET (Valkey) req/s vs nginx at -c50" "$r_hit" ">= 0.50" "$(verdict "$r_hit" '>=' 0.5)"
        printf '%-46s %-22s %-12s %s\n' "cached GET p99 at -c50 (ms)" "${R[prod_hit:50:p99_ms]:-n/a}" "<= 2" \
            "$(verdict "${R[prod_hit:50:p99_ms]:-}" '<=' 2)"
        per=n/a
        local sent=n/a calls=n/a sent_l=n/a rt=n/a
        if [[ -n "${R[prod_hit:50:requests]:-}" && "${R[prod_hit:50:requests]:-0}" != 0 ]]; then
            per=$(awk -v c="${R[prod_hit:50:valkey_reads]:-0}" -v r="${R[prod_hit:50:requests]}" 'BEGIN{printf "%.3f", c/r}')
            sent=$(awk -v c="${R[prod_hit:50:valkey_sent]:-0}" -v r="${R[prod_hit:50:requests]}" 'BEGIN{printf "%.3f", c/r}')
            calls=$(awk -v c="${R[prod_hit:50:valkey_calls]:-0}" -v r="${R[prod_hit:50:requests]}" 'BEGIN{printf "%.3f", c/r}')
        fi
        [[ -n "${R[prod_hit_local:50:requests]:-}" && "${R[prod_hit_local:50:requests]:-0}" != 0 ]] &&
            sent_l=$(awk -v c="${R[prod_hit_local:50:valkey_sent]:-0}" -v r="${R[prod_hit_local:50:requests]}" 'BEGIN{printf "%.3f", c/r}')
        rt=$(ratio "${R[prod_hit:50:rps]:-}" "${R[prod_hit_local:50:rps]:-}")
        printf '%-46s %-22s %-12s %s\n' "Valkey round trips per cached GET (-c50)" "$per" "<= 1" "$(verdict "$per" '<=' 1)"
        echo "Valkey commands per cached GET (-c50): $sent sent by the service (EVALSHA + GET, pipelined)," \
            "$calls counted by Valkey (with the script's TIME, GET, SET); rateLimitStore local: $sent_l"
        echo "cached GET with the Valkey rate limiter vs rateLimitStore local (-c50): ${R[prod_hit:50:rps]:-n/a}" \
            "vs ${R[prod_hit_local:50:rps]:-n/a} req/s (ratio $rt), p99 ${R[prod_hit:50:p99_ms]:-n/a} vs" \
            "${R[prod_hit_local:50:p99_ms]:-n/a} ms"
        local r_af lost=n/a
        r_af=$(ratio "${R[prod_audit_file:50:rps]:-}" "${R[nginx:50:rps]:-}")
        [[ -n "${R[prod_audit_file:in_file]:-}" && -n "${R[prod_audit_file:answered]:-}" ]] &&
            lost=$((R[prod_audit_file:answered] - R[prod_audit_file:in_file]))
        printf '%-46s %-22s %-12s %s\n' "cached GET, reads audited to audit.file, vs nginx" "$r_af, lost $lost" ">= 0.60, 0" \
            "$( [[ "$lost" == 0 ]] && verdict "$r_af" '>=' 0.6 || echo MISS)"
        echo "  audit.file (local rate limiter): ${R[prod_audit_file:50:rps]:-n/a} req/s, p99 ${R[prod_audit_file:50:p99_ms]:-n/a} ms" \
            "(not audited, prod_hit_local: ${R[prod_hit_local:50:rps]:-n/a} req/s);" \
            "GETs answered ${R[prod_audit_file:answered]:-n/a}, in the file ${R[prod_audit_file:in_file]:-n/a}" \
            "(${R[prod_audit_file:lines]:-n/a} lines), file dropped ${R[prod_audit_file:file:dropped]:-n/a}"
        echo "  backend sink (default sink, local rate limiter; POSTs to the Python fake on the same CPUs, -c50): ${R[prod_audit:50:rps]:-n/a} req/s," \
            "p99 ${R[prod_audit:50:p99_ms]:-n/a} ms; GETs answered ${R[prod_audit:answered]:-n/a}, audited requests sent" \
            "${R[prod_audit:backend:sent]:-n/a}, dropped ${R[prod_audit:backend:dropped]:-n/a}, failed ${R[prod_audit:backend:failed]:-n/a}" \
            "(before SIGTERM)"
        echo "cache-miss GET against the backend fake (-c50): ${R[prod_miss:50:rps]:-n/a} req/s, p99 ${R[prod_miss:50:p99_ms]:-n/a} ms;" \
            "backend GETs ${R[prod_miss:backend_gets]:-n/a}, coalesced ${R[prod_miss:coalesced]:-n/a}"
    fi
    if want workers; then
        local lv c
        for lv in "${LEVELS[@]}"; do
            set -- $lv
            c=$2
            echo "workers 1 -> 2 at -c$c: /health ${R[w1_health:$c:rps]:-n/a} -> ${R[w2_health:$c:rps]:-n/a} req/s" \
                "($(ratio "${R[w2_health:$c:rps]:-}" "${R[w1_health:$c:rps]:-}")x), cached GET ${R[w1_get:$c:rps]:-n/a} ->" \
                "${R[w2_get:$c:rps]:-n/a} req/s ($(ratio "${R[w2_get:$c:rps]:-}" "${R[w1_get:$c:rps]:-}")x)"
        done
        local w1n w2n
        w1n=$(( ${R[w1_health:50:requests]:-0} + ${R[w1_health:256:requests]:-0} ))
        w2n=$(( ${R[w2_health:50:requests]:-0} + ${R[w2_health:256:requests]:-0} ))
        echo "  /health requests counted by /metrics (summed over workers) vs completed by wrk: 1 worker" \
            "${R[workers1:health_total]:-n/a} vs $w1n, 2 workers ${R[workers2:health_total]:-n/a} vs $w2n" \
            "(the server also answers what wrk cut off at its deadline, and the start-up probe)"
        echo "  $(nproc) CPUs shared by wrk, redis-server, the backend fake and the workers: on 2 CPUs a second worker" \
            "competes with wrk for the same cores, so this shows the cost of the supervisor and port sharing, not scaling"
    fi
    if ((${#PROBLEMS[@]})); then
        echo
        echo "== problems =="
        printf -- '- %s\n' "${PROBLEMS[@]}"
    fi
}

want() { # want NAME: is the scenario selected by BENCH_ONLY?
    [[ "$ONLY" == all ]] && return 0
    [[ ",$ONLY," == *",$1,"* ]]
}

# --- main ------------------------------------------------------------------------------------

main() {
    local tool s
    for tool in wrk curl meson "$PY"; do
        command -v "$tool" >/dev/null || fatal "$tool not found (run .ci/setup)"
    done
    if [[ "$ONLY" != all ]]; then
        for s in ${ONLY//,/ }; do
            [[ " ${SCENARIOS[*]} nginx " == *" $s "* ]] || fatal "unknown scenario '$s' in BENCH_ONLY (have: ${SCENARIOS[*]} nginx)"
        done
    fi
    [[ "$DURATION" =~ ^[0-9]+$ && "$DURATION" -gt 0 ]] || fatal "BENCH_SECONDS must be a positive integer"

    WORK=$(mktemp -d "${TMPDIR:-/tmp}/cronium-bench.XXXXXX") || fatal "mktemp failed"
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    # The connection scenario needs file descriptors in the service and in the client.
    ulimit -n "$(ulimit -Hn)" 2>/dev/null

    if [[ ! -d "$BUILD_DIR" ]]; then
        log "meson setup --buildtype=release $BUILD_DIR"
        meson setup --buildtype=release "$BUILD_DIR" "$REPO" >"$WORK/meson-setup.log" 2>&1 ||
            { cat "$WORK/meson-setup.log" >&2; fatal "meson setup failed"; }
    fi
    log "meson compile -C $BUILD_DIR cronium-runtime"
    if ! meson compile -C "$BUILD_DIR" cronium-runtime >"$WORK/meson-compile.log" 2>&1; then
        tail -n 20 "$WORK/meson-compile.log" >&2
        [[ -x "$BIN" ]] || fatal "meson compile failed and there is no binary at $BIN"
        # The tree may be mid-edit (e.g. a meson.build naming a file not written yet); say so
        # loudly and measure the binary that is there.
        problem "meson compile failed ($(grep -m1 -i 'error' "$WORK/meson-compile.log")); measured the existing $BIN built $(date -r "$BIN" '+%F %T')"
    fi
    [[ -x "$BIN" ]] || fatal "no binary at $BIN"

    echo "cronium-runtime load benchmark: $("$BIN" --version 2>&1 | head -n1 | cut -d'(' -f1)$BIN, $(meson introspect --buildoptions "$BUILD_DIR" 2>/dev/null |
        "$PY" -c 'import json,sys; print("buildtype=" + next(o["value"] for o in json.load(sys.stdin) if o["name"] == "buildtype"))' 2>/dev/null)"
    echo "machine: $(nproc) CPUs, $(uname -sr), $(wrk --version 2>&1 | head -n1 | cut -d' ' -f1-2), $(nginx -v 2>&1), load average $(cut -d' ' -f1-3 /proc/loadavg)"

    if want nginx; then scenario_nginx; fi
    for s in "${SCENARIOS[@]}"; do
        if want "$s"; then "scenario_$s"; fi
    done

    print_results
    print_summary
    return 0
}

main "$@"
exit 0
