# shellcheck shell=bash
# The fleet's real parts beside Ironic, from Debian's packages: a MariaDB server for Ironic's
# database and a Squid caching proxy in front of the image origin. Source it after
# tests/ironic/lib.sh. Each runs unprivileged (as the package's own user) with its data in
# the scratch dir, and is stopped by the PID recorded when it started.

# mariadb_up DIR: a fresh MariaDB on 127.0.0.1 (socket DIR/mysql.sock) with an `ironic`
# database. Exports DB_URL (SQLAlchemy URL for Ironic, over the socket).
mariadb_up() {
    local dir=$1 d=$1/mysql
    mkdir -p "$d"
    chmod a+x "$dir"  # the server's user must reach its directory
    chown -R mysql:mysql "$d"
    setpriv --reuid=mysql --regid=mysql --clear-groups \
        mariadb-install-db --no-defaults --datadir="$d/data" --auth-root-authentication-method=normal \
        --skip-test-db > "$d/install.log" 2>&1 || { cat "$d/install.log" >&2; return 1; }
    # Sized for a hundred nodes on a small machine; the binary log is off (no replica).
    setpriv --reuid=mysql --regid=mysql --clear-groups \
        mariadbd --no-defaults --datadir="$d/data" --socket="$d/mysql.sock" \
        --skip-networking --pid-file="$d/mariadbd.pid" --log-error="$d/error.log" \
        --innodb-buffer-pool-size=128M --innodb-flush-log-at-trx-commit=2 \
        --max-connections=500 --skip-name-resolve > "$d/stdout.log" 2>&1 &
    echo $! > "$dir/mariadb.pid"
    for _ in $(seq 1 120); do
        if mariadb --no-defaults --socket="$d/mysql.sock" -uroot -e 'SELECT 1' >/dev/null 2>&1; then
            mariadb --no-defaults --socket="$d/mysql.sock" -uroot \
                -e 'CREATE DATABASE ironic CHARACTER SET utf8mb4' || return 1
            DB_URL="mysql+pymysql://root@/ironic?unix_socket=$d/mysql.sock&charset=utf8mb4"
            export DB_URL
            log "mariadb ready ($(mariadbd --version | awk '{print $3}'), socket $d/mysql.sock)"
            return 0
        fi
        kill -0 "$(cat "$dir/mariadb.pid")" 2>/dev/null || break
        sleep 0.25
    done
    log "mariadb did not start:"; tail -n 20 "$d/error.log" >&2
    return 1
}
mariadb_down() { stop_pid_file "$1/mariadb.pid"; }

# squid_up DIR ORIGIN_PORT: a memory-only Squid on 127.0.0.1 that caches the origin's
# images (large objects, query strings included, one origin fetch for many concurrent
# misses). Exports PROXY_PORT and PROXY_URL.
squid_up() {
    local dir=$1 d=$1/squid
    mkdir -p "$d"
    chmod a+x "$dir"
    PROXY_PORT=$(free_port)
    PROXY_URL=http://127.0.0.1:$PROXY_PORT
    export PROXY_PORT PROXY_URL
    cat > "$d/squid.conf" <<CONF
http_port 127.0.0.1:$PROXY_PORT
pid_filename $d/squid.pid
cache_log $d/cache.log
access_log stdio:$d/access.log squid
cache_store_log none
coredump_dir $d
acl localnet src 127.0.0.1/32
http_access allow localnet
http_access deny all
# Images live in memory only: no cache_dir, nothing written under /var/spool.
cache_mem 256 MB
maximum_object_size 256 MB
maximum_object_size_in_memory 256 MB
# A hundred agents asking for the same image at once: one origin fetch, the rest wait.
collapsed_forwarding on
# Query strings (presigned URLs) are part of the key and are cached like any object.
refresh_pattern . 60 50% 1440
# Log lines never carry the query (the signature); this is Squid's default, kept explicit.
strip_query_terms on
shutdown_lifetime 1 second
workers 1
CONF
    chown -R proxy:proxy "$d"
    setpriv --reuid=proxy --regid=proxy --clear-groups squid -N -f "$d/squid.conf" \
        > "$d/stdout.log" 2>&1 &
    echo $! > "$dir/squid.pid"
    for _ in $(seq 1 80); do
        if curl -s -o /dev/null -x "$PROXY_URL" "http://127.0.0.1:1/" 2>/dev/null &&
            [ -s "$d/access.log" ]; then
            log "squid ready on $PROXY_URL ($(squid -v | head -n1))"
            return 0
        fi
        kill -0 "$(cat "$dir/squid.pid")" 2>/dev/null || break
        sleep 0.25
    done
    log "squid did not start:"; tail -n 20 "$d/cache.log" "$d/stdout.log" >&2
    return 1
}
squid_down() { stop_pid_file "$1/squid.pid"; }
