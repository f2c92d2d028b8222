#!/usr/bin/env bash
# A real Keystone to measure the agent's identity API against (scs-edge-bench identity).
#
# Usage: KEYSTONE_ADMIN_PASSWORD=… [KEYSTONE_PORT=5000] scripts/keystone-baseline.sh start DIR
#        scripts/keystone-baseline.sh stop DIR
#
# start: installs Keystone (pinned below) and gunicorn into DIR/venv unless they are already there,
# configures it under DIR (SQLite, fernet tokens; nothing in /etc/keystone), bootstraps the admin user
# and the admin project with KEYSTONE_ADMIN_PASSWORD, serves the public WSGI app with gunicorn on
# 127.0.0.1:KEYSTONE_PORT and returns once /v3 answers. The database and keys are made anew on each
# start, so every run measures the same fresh deployment; only the venv is reused.
# stop: ends the gunicorn master (and so its workers) and waits until it is gone.
#
# Two workers, as a small control-plane deployment would run it; bcrypt at Keystone's default cost
# (12) for the stored password, as `keystone-manage bootstrap` sets it.
set -euo pipefail

KEYSTONE_VERSION=30.0.0
GUNICORN_VERSION=27.0.1

usage() {
	echo "usage: KEYSTONE_ADMIN_PASSWORD=… [KEYSTONE_PORT=5000] $0 start DIR | $0 stop DIR" >&2
	exit 2
}

[ $# -eq 2 ] || usage
action=$1
mkdir -p "$2"
B=$(cd "$2" && pwd)
pidfile=$B/gunicorn.pid

stop() {
	[ -s "$pidfile" ] || return 0
	local pid
	pid=$(cat "$pidfile")
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid"
		# gunicorn's graceful shutdown waits for its workers; a minute is far more than they need.
		for _ in $(seq 120); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.5
		done
		kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
	fi
	rm -f "$pidfile"
}

start() {
	: "${KEYSTONE_ADMIN_PASSWORD:?set KEYSTONE_ADMIN_PASSWORD to the admin password to bootstrap}"
	local port=${KEYSTONE_PORT:-5000}
	stop # a previous run that died half-way must not hold the port or the pid file

	# 1. venv, reused when it already holds exactly these pins.
	local stamp=$B/venv/.pins-keystone-$KEYSTONE_VERSION-gunicorn-$GUNICORN_VERSION
	if [ ! -e "$stamp" ]; then
		echo "installing keystone==$KEYSTONE_VERSION and gunicorn==$GUNICORN_VERSION into $B/venv (first run only; takes a few minutes)" >&2
		rm -rf "$B/venv"
		python3 -m venv "$B/venv"
		"$B/venv/bin/pip" install -q --disable-pip-version-check \
			"keystone==$KEYSTONE_VERSION" "gunicorn==$GUNICORN_VERSION"
		touch "$stamp"
	fi

	# 2. configuration and state, all under DIR.
	rm -rf "$B/etc" "$B/fernet-keys" "$B/credential-keys" "$B/log" "$B/keystone.db"
	mkdir -p "$B/etc" "$B/fernet-keys" "$B/credential-keys" "$B/log"
	cat >"$B/etc/keystone.conf" <<CONF
[DEFAULT]
log_file = $B/log/keystone.log
[database]
connection = sqlite:///$B/keystone.db
[token]
provider = fernet
[fernet_tokens]
key_repository = $B/fernet-keys
[fernet_receipts]
# Defaults to /etc/keystone/fernet-keys/; fernet_setup initialises this one too.
key_repository = $B/fernet-keys
[credential]
key_repository = $B/credential-keys
CONF
	export OS_KEYSTONE_CONFIG_FILES=$B/etc/keystone.conf
	local km=("$B/venv/bin/keystone-manage" --config-file "$B/etc/keystone.conf")
	local user group
	user=$(id -un)
	group=$(id -gn)
	"${km[@]}" fernet_setup --keystone-user "$user" --keystone-group "$group"
	"${km[@]}" credential_setup --keystone-user "$user" --keystone-group "$group"
	# Without this Keystone logs a "world readable" warning on every request, which skews timings.
	chmod 700 "$B/fernet-keys" "$B/credential-keys"
	"${km[@]}" db_sync
	"${km[@]}" bootstrap --bootstrap-password "$KEYSTONE_ADMIN_PASSWORD" \
		--bootstrap-admin-url "http://127.0.0.1:$port/v3" \
		--bootstrap-public-url "http://127.0.0.1:$port/v3" \
		--bootstrap-region-id RegionOne

	# 3. gunicorn. Keystone parses sys.argv with oslo.config inside the worker, so any gunicorn
	# command-line argument makes the worker exit ("unrecognized arguments"): every setting goes into
	# gunicorn.conf.py, which gunicorn reads from its working directory, and it runs with no arguments.
	cat >"$B/gunicorn.conf.py" <<GCONF
wsgi_app = "keystone.wsgi.api:application"
bind = "127.0.0.1:$port"
workers = 2
pidfile = "$pidfile"
errorlog = "$B/log/gunicorn.log"
daemon = True
# gunicorn 27 would otherwise create ~/.gunicorn/gunicorn.ctl.
control_socket_disable = True
raw_env = ["OS_KEYSTONE_CONFIG_FILES=$B/etc/keystone.conf"]
GCONF
	(cd "$B" && "$B/venv/bin/gunicorn")
	for _ in $(seq 120); do
		if curl -sf --max-time 2 "http://127.0.0.1:$port/v3" >/dev/null; then
			echo "keystone $KEYSTONE_VERSION on http://127.0.0.1:$port/v3 (gunicorn master pid $(cat "$pidfile"))" >&2
			return 0
		fi
		sleep 0.5
	done
	echo "keystone did not answer on http://127.0.0.1:$port/v3 within a minute; see $B/log" >&2
	tail -n 20 "$B/log/gunicorn.log" >&2 || true
	stop
	exit 1
}

case $action in
start) start ;;
stop) stop ;;
*) usage ;;
esac
