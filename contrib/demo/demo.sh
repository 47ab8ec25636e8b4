#!/usr/bin/env bash
# contrib/demo/demo.sh: listcrypt end to end on one machine, in about a
# minute. Run it as root through "make demo" (which builds bin/ first).
#
# It installs what is missing (postfix, gnupg, curl), creates a demo list
# devs@lists.example.org with three members (alice, bob, carol, each with a
# throw-away GnuPG home), starts listcrypt-milter and a PRIVATE Postfix on
# loopback (its own config, queue and mailboxes under the demo folder; the
# system Postfix, if any, is not touched), sends an encrypted and signed post
# from alice over SMTP and shows that every member receives the list's copy
# and can decrypt it with only their own key. It also shows the reply a
# plain (unencrypted) post gets.
#
# Everything lives in $DEMO_DIR (default /tmp/listcrypt-demo), recreated on
# every run and left in place afterwards for inspection. Postfix and the
# milter are stopped when the script ends, also on failure or Ctrl-C.
#
# Environment: DEMO_DIR (the demo folder), DEMO_SMTP_PORT (first port to try
# for the public smtpd, default 2525), DEMO_REINJECT_PORT (first port to try
# for the reinjection smtpd, default 10026), DEMO_BATCH_SIZE (recipients per
# delivered copy, default 2, so that one copy goes out through the
# reinjection listener).
set -euo pipefail
umask 022

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN="$REPO/bin"
DIR="${DEMO_DIR:-/tmp/listcrypt-demo}"
BATCH_SIZE="${DEMO_BATCH_SIZE:-2}"

LIST=devs@lists.example.org
LIST_DOMAIN=lists.example.org
MEMBER_DOMAIN=example.org
MEMBERS=(alice bob carol)
SENDER=alice

CFG="$DIR/listcrypt.toml"
SOCK="$DIR/run/milter.sock"
PF_ETC="$DIR/postfix/etc"
PF_SPOOL="$DIR/postfix/spool"
PF_DATA="$DIR/postfix/data"
MAILLOG="$DIR/maillog"
MAILDIR="$DIR/mail"
MARKER=".listcrypt-demo" # proves that $DIR is ours before we delete it

# The friendly text alice posts; the check "could decrypt" looks for it.
POST_LINE="The release is on Friday at 10:00 UTC. Cake is in the kitchen."

# Postfix's commands live in /usr/sbin, often not on root's PATH in
# containers; gpgconf & co. are in /usr/bin.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin" ;; esac
case ":$PATH:" in *:/sbin:*) ;; *) PATH="$PATH:/sbin" ;; esac
export PATH
# gpg's messages are matched below ("Good signature from"): no translations.
export LC_ALL=C
unset LANGUAGE

MILTER_PID=""
PF_STARTED=0
OWN_DIR=0 # set once $DIR is known to be the demo's: cleanup touches nothing before
SMTP_PORT=""
REINJECT_PORT=""

# ---------------------------------------------------------------- output

if [ -t 1 ]; then
	B=$'\e[1m' G=$'\e[32m' R=$'\e[31m' N=$'\e[0m'
else
	B="" G="" R="" N=""
fi

step_no=0
step() { # step TITLE: a numbered heading
	step_no=$((step_no + 1))
	printf '\n%s== %d. %s%s\n' "$B" "$step_no" "$*" "$N"
}
say() { printf '   %s\n' "$*"; }
ok() { printf '   %sok%s %s\n' "$G" "$N" "$*"; }
bad() { printf '   %sFAILED%s %s\n' "$R" "$N" "$*"; }
indent() { sed 's/^/      | /'; } # quote a block of output
die() {
	printf '\n%sdemo: %s%s\n' "$R" "$*" "$N" >&2
	exit 1
}

# ---------------------------------------------------------------- helpers

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.1s until it
# succeeds; fails after SECONDS.
wait_for() {
	local secs=$1 what=$2
	shift 2
	local tries=$((secs * 10))
	while ! "$@" 2>/dev/null; do
		tries=$((tries - 1))
		[ "$tries" -gt 0 ] || return 1
		sleep 0.1
	done
}

# alive PID: the process runs (a zombie counts as gone).
alive() {
	local state
	[ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] || return 1
	state=$(sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f1)
	[ "$state" != Z ] && [ "$state" != X ]
}

gone() { ! alive "$1"; }

# port_in_use PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_in_use() {
	timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# free_port FIRST [EXCEPT]: the first port from FIRST on that nobody uses.
free_port() {
	local p=$1 except=${2:-}
	while [ "$p" -lt $(($1 + 100)) ]; do
		if [ "$p" != "$except" ] && ! port_in_use "$p"; then
			echo "$p"
			return 0
		fi
		p=$((p + 1))
	done
	return 1
}

# smtp_greets PORT: an SMTP server on 127.0.0.1:PORT sends its 220 greeting.
smtp_greets() {
	local line
	exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
	IFS= read -r -t 5 line <&3 || { exec 3>&-; return 1; }
	printf 'QUIT\r\n' >&3
	exec 3>&-
	[[ $line == 220* ]]
}

# gpg_as NAME ARGS...: gpg in NAME's own throw-away home, nothing else.
gpg_as() {
	local name=$1
	shift
	gpg --homedir "$DIR/gnupg/$name" "$@"
}

# to_crlf: LF line endings to CRLF (SMTP's canonical form).
to_crlf() { sed 's/\r$//; s/$/\r/'; }

# send_mail FILE FROM TO REPLYFILE: sends FILE over SMTP to the public
# smtpd with curl (the URL path is the EHLO name; without one curl says
# EHLO with the file's name); writes the server's reply to the end of DATA
# (or to whatever command failed) to REPLYFILE. Returns curl's status.
send_mail() {
	local file=$1 from=$2 to=$3 replyfile=$4 trace rc=0
	trace="$file.smtp-trace"
	curl --silent --show-error --verbose --max-time 60 \
		--url "smtp://127.0.0.1:$SMTP_PORT/client.example.org" --mail-from "$from" --mail-rcpt "$to" \
		--upload-file "$file" 2>"$trace" || rc=$?
	# The last server reply before QUIT: "< 250 2.0.0 Ok: queued as ..."
	# or the refusal. curl -v prints server lines as "< ...".
	grep '^< [0-9][0-9][0-9]' "$trace" | grep -v '^< 221 ' | tail -n 1 |
		sed 's/^< //; s/\r$//' >"$replyfile"
	return "$rc"
}

# ---------------------------------------------------------------- cleanup

stop_postfix() {
	local pid=""
	[ -f "$PF_ETC/main.cf" ] || return 0
	[ -r "$PF_SPOOL/pid/master.pid" ] && pid=$(tr -d ' \n' <"$PF_SPOOL/pid/master.pid")
	alive "$pid" || return 0
	postfix -c "$PF_ETC" stop >/dev/null 2>&1 || true
	wait_for 10 "postfix master exit" gone "$pid" || true
	if alive "$pid"; then
		kill -KILL "$pid" 2>/dev/null || true
	fi
	# The master runs in its own process group, with its children.
	pkill_group "$pid"
}

# pkill_group PGID: kills the live members of one process group, by pid.
pkill_group() {
	local pgid=$1 f pid pg
	for f in /proc/[0-9]*/stat; do
		pid=${f#/proc/}
		pid=${pid%/stat}
		pg=$(sed 's/.*) //' "$f" 2>/dev/null | cut -d' ' -f3) || continue
		[ "$pg" = "$pgid" ] && kill -KILL "$pid" 2>/dev/null || true
	done
}

stop_milter() {
	local pid=${1:-$MILTER_PID}
	alive "$pid" || return 0
	# Only ever kill our own milter: check what the pid runs.
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'listcrypt-milter' || return 0
	kill -TERM "$pid" 2>/dev/null || true
	wait_for 10 "milter exit" gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

stop_agents() {
	local h
	for h in "$DIR"/gnupg/*/; do
		[ -d "$h" ] && gpgconf --homedir "$h" --kill all >/dev/null 2>&1 || true
	done
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	set +e
	[ "$OWN_DIR" = 1 ] || exit "$rc"
	if [ "$PF_STARTED" = 1 ] || [ -n "$MILTER_PID" ]; then
		printf '\n%s== stopping the demo Postfix and listcrypt-milter%s\n' "$B" "$N"
	fi
	stop_postfix
	stop_milter
	stop_agents
	if [ "$rc" -ne 0 ]; then
		printf '\n%sdemo failed (exit %d); everything is in %s%s\n' "$R" "$rc" "$DIR" "$N" >&2
		if [ -s "$MAILLOG" ]; then
			echo "--- last lines of $MAILLOG" >&2
			tail -n 15 "$MAILLOG" >&2
		fi
		if [ -s "$DIR/milter.log" ]; then
			echo "--- last lines of $DIR/milter.log" >&2
			tail -n 15 "$DIR/milter.log" >&2
		fi
	fi
	exit "$rc"
}

# ---------------------------------------------------------------- steps

preflight() {
	[ "$(id -u)" -eq 0 ] || die "run me as root (a private Postfix needs it): sudo make demo"
	for b in listcrypt listcrypt-milter; do
		[ -x "$BIN/$b" ] || die "$BIN/$b missing: run \"make demo\" (it builds first) or \"make build\""
	done
	case "$DIR" in
	/*) ;;
	*) die "DEMO_DIR must be an absolute path, not $DIR" ;;
	esac
	[ "$DIR" != / ] || die "DEMO_DIR must not be /"
}

install_missing() {
	step "Checking the packages the demo needs (postfix, gnupg, curl)"
	local pkg missing=()
	for pkg in postfix gnupg curl; do
		if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
			ok "$pkg $(dpkg-query -W -f='${Version}' "$pkg") is installed"
		else
			missing+=("$pkg")
		fi
	done
	if [ "${#missing[@]}" -gt 0 ]; then
		say "installing ${missing[*]} (apt-get)"
		export DEBIAN_FRONTEND=noninteractive
		# Without this answer the postfix package writes a system
		# configuration; the demo runs its own private instance instead.
		echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
		ok "installed ${missing[*]}"
	fi
	# Postfix's tools complain when the default main.cf is missing (it is,
	# after "No configuration"); an empty one changes nothing.
	if [ ! -e /etc/postfix/main.cf ]; then
		touch /etc/postfix/main.cf
		say "created an empty /etc/postfix/main.cf"
	fi
	id postfix >/dev/null 2>&1 || die "no postfix user after installing postfix"
}

# fresh_folder: stops whatever a previous run left running and recreates
# $DIR, reachable by the postfix user (every folder above it searchable).
fresh_folder() {
	step "Preparing a fresh demo folder $DIR"
	if [ -e "$DIR" ]; then
		if [ -n "$(ls -A "$DIR" 2>/dev/null)" ] && [ ! -e "$DIR/$MARKER" ]; then
			die "$DIR exists and was not made by this demo; set DEMO_DIR to another folder"
		fi
		OWN_DIR=1
		# Leftovers of a previous run (killed with -9, say).
		stop_postfix
		[ -r "$DIR/milter.pid" ] && stop_milter "$(cat "$DIR/milter.pid")"
		stop_agents
		rm -rf "$DIR"
		say "removed the previous run's folder"
	fi
	mkdir -p "$DIR"
	chmod 0755 "$DIR"
	touch "$DIR/$MARKER"
	OWN_DIR=1
	# smtpd runs as postfix and must reach the milter socket: every folder
	# from / down to $DIR/run must be searchable by others.
	local d=$DIR
	while [ "$d" != / ]; do
		[ "$(( $(stat -c '%#a' "$d") & 1 ))" -eq 1 ] ||
			die "$d (mode $(stat -c %a "$d")) is not searchable by the postfix user; use another DEMO_DIR"
		d=$(dirname "$d")
	done
	mkdir -m 0755 "$DIR/run" "$DIR/gnupg" "$DIR/keys" "$DIR/post" "$DIR/postfix" "$PF_ETC" "$PF_SPOOL"
	chmod 0700 "$DIR/gnupg"
	ok "created $DIR"
}

create_list() {
	step "Creating the list $LIST with listcrypt"
	cat >"$CFG" <<EOF
# listcrypt site config of the demo (every key: docs/config.md).
state_dir = "$DIR/state"
database = "sqlite:$DIR/state/state.db"
policy_dir = "$DIR/lists.d"
passphrase_file = "$DIR/passphrase"

[milter]
listen = "unix:$SOCK"
# smtpd (user postfix, primary group postfix) connects to the 0660 socket.
socket_group = "postfix"

[reinject]
# The demo Postfix's reinjection listener (milters off).
address = "127.0.0.1:$REINJECT_PORT"

[log]
level = "info"
EOF
	say "site config: $CFG"
	say "\$ listcrypt init"
	"$BIN/listcrypt" -c "$CFG" init | indent
	say "\$ listcrypt list create $LIST --owner $SENDER@$MEMBER_DOMAIN"
	"$BIN/listcrypt" -c "$CFG" list create "$LIST" --owner "$SENDER@$MEMBER_DOMAIN" | indent
	# Small batches, so that the demo shows both delivery paths: the
	# milter rewrites the original message for the first batch and
	# submits the others to Postfix's reinjection listener.
	local policy="$DIR/lists.d/$LIST.toml"
	[ -f "$policy" ] || die "list create wrote no $policy"
	sed -i "s/^batch_size = .*/batch_size = $BATCH_SIZE/" "$policy"
	grep -q "^batch_size = $BATCH_SIZE\$" "$policy" || die "could not set batch_size in $policy"
	say "policy: $policy (batch_size = $BATCH_SIZE: one copy per $BATCH_SIZE members)"
	"$BIN/listcrypt" -c "$CFG" policy check | indent
	"$BIN/listcrypt" -c "$CFG" list key export "$LIST" >"$DIR/keys/devs.asc"
	ok "list key exported to $DIR/keys/devs.asc"
}

add_members() {
	step "Giving alice, bob and carol their own OpenPGP keys and subscribing them"
	local name Name addr home
	for name in "${MEMBERS[@]}"; do
		Name="${name^}"
		addr="$name@$MEMBER_DOMAIN"
		home="$DIR/gnupg/$name"
		mkdir -m 0700 "$home"
		# A throw-away home: no network look-ups, no trust questions.
		cat >"$home/gpg.conf" <<EOF
auto-key-locate local
no-auto-key-retrieve
trust-model always
batch
pinentry-mode loopback
EOF
		# No smartcards here: spares "No SmartCard daemon" noise.
		echo disable-scdaemon >"$home/gpg-agent.conf"
		gpg_as "$name" --batch --passphrase '' --quick-gen-key "$Name <$addr>" future-default default never 2>/dev/null ||
			die "gpg could not make a key for $addr"
		gpg_as "$name" --armor --export "$addr" >"$DIR/keys/$name.asc"
		# The member gets the list key, to encrypt posts and verify copies.
		gpg_as "$name" --import "$DIR/keys/devs.asc" 2>/dev/null || die "$name could not import the list key"
		say "$Name: key $(gpg_as "$name" --with-colons --list-keys "$addr" | awk -F: '$1=="fpr"{print $10; exit}') in $home"
		"$BIN/listcrypt" -c "$CFG" member add "$LIST" "$addr" --key "$DIR/keys/$name.asc" | indent
	done
	say "\$ listcrypt member list $LIST"
	"$BIN/listcrypt" -c "$CFG" member list "$LIST" | indent
}

start_milter() {
	step "Starting listcrypt-milter on unix:$SOCK"
	"$BIN/listcrypt-milter" -c "$CFG" -n | indent
	"$BIN/listcrypt-milter" -c "$CFG" >>"$DIR/milter.log" 2>&1 &
	MILTER_PID=$!
	echo "$MILTER_PID" >"$DIR/milter.pid"
	local tries=100
	while [ ! -S "$SOCK" ]; do
		alive "$MILTER_PID" || die "listcrypt-milter exited; see $DIR/milter.log"
		tries=$((tries - 1))
		[ "$tries" -gt 0 ] || die "listcrypt-milter did not create $SOCK within 10s"
		sleep 0.1
	done
	setpriv --reuid=postfix --regid=postfix --clear-groups test -w "$SOCK" 2>/dev/null ||
		die "the postfix user cannot write $SOCK"
	ok "listcrypt-milter runs (pid $MILTER_PID, log $DIR/milter.log)"
}

# --- the private Postfix

# main.cf is built like contrib/postfix/rig does: the demo's settings, then
# every line of contrib/postfix/main.cf.snippet, then the demo's milter
# socket and short timeouts. A later value replaces an earlier one.
declare -A PF_PARAM=()
PF_ORDER=()
pf_set() {
	[ -n "${PF_PARAM[$1]+set}" ] || PF_ORDER+=("$1")
	PF_PARAM[$1]=$2
}

write_main_cf() {
	local nobody_uid nogroup_gid name value
	nobody_uid=$(id -u nobody)
	nogroup_gid=$(getent group nogroup | cut -d: -f3)
	[ -n "$nogroup_gid" ] || nogroup_gid=$(id -g nobody)

	pf_set compatibility_level 3.6
	pf_set queue_directory "$PF_SPOOL"
	pf_set data_directory "$PF_DATA"
	# No syslog here: postlogd writes this file.
	pf_set maillog_file "$MAILLOG"
	pf_set maillog_file_prefixes "$DIR"
	pf_set myhostname demo.listcrypt.test
	pf_set mydomain listcrypt.test
	pf_set myorigin '$myhostname'
	# Nothing is delivered by local(8).
	pf_set mydestination ""
	pf_set local_recipient_maps ""
	pf_set local_transport "error:5.1.1 no local delivery in the demo"
	pf_set alias_maps ""
	pf_set alias_database ""
	# The list domain is accepted: the milter turns the list address into
	# the members' addresses. Whatever else is addressed there (e.g. the
	# list's bounce address) is dropped, and nothing is relayed anywhere
	# else ("error" would make smtpd refuse the list address itself).
	pf_set relay_domains "$LIST_DOMAIN"
	pf_set relay_transport "discard:the demo relays nothing"
	pf_set default_transport "error:5.4.4 the demo does not relay"
	# The members' mailboxes: mbox files under $MAILDIR.
	pf_set virtual_mailbox_domains "$MEMBER_DOMAIN"
	pf_set virtual_mailbox_base "$MAILDIR"
	pf_set virtual_mailbox_maps "texthash:$DIR/vmailbox"
	pf_set virtual_uid_maps "static:$nobody_uid"
	pf_set virtual_gid_maps "static:$nogroup_gid"
	pf_set virtual_mailbox_limit 0
	pf_set mailbox_size_limit 0
	pf_set inet_interfaces loopback-only
	pf_set inet_protocols ipv4
	pf_set mynetworks 127.0.0.0/8
	# No DNS at all.
	pf_set smtp_dns_support_level disabled
	pf_set smtp_host_lookup native
	pf_set smtp_tls_security_level none
	pf_set smtpd_tls_security_level none
	# Short queue delays.
	pf_set queue_run_delay 1s
	pf_set minimal_backoff_time 1s
	pf_set maximal_backoff_time 2s
	pf_set notify_classes ""
	pf_set smtpd_error_sleep_time 0
	pf_set in_flow_delay 0
	pf_set biff no
	pf_set append_dot_mydomain no

	# The lines an admin adds (contrib/postfix/main.cf.snippet), as shipped:
	# "name = value" per line, continuation lines start with whitespace.
	while IFS=$'\t' read -r name value; do
		pf_set "$name" "$value"
	done < <(awk '
		/^[ \t]*(#|$)/ { next }
		/^[ \t]/ { sub(/^[ \t]+/, ""); v[n] = v[n] " " $0; next }
		{ i = index($0, "="); n++; k[n] = $0; v[n] = substr($0, i + 1)
		  sub(/[ \t]*=.*/, "", k[n]); gsub(/^[ \t]+|[ \t]+$/, "", v[n]) }
		END { for (j = 1; j <= n; j++) printf "%s\t%s\n", k[j], v[j] }
	' "$REPO/contrib/postfix/main.cf.snippet")

	# This demo's milter socket, and give up quickly on a dead milter.
	pf_set smtpd_milters "unix:$SOCK"
	pf_set milter_connect_timeout 2s
	pf_set milter_command_timeout 10s

	{
		echo "# The demo's private Postfix, built by contrib/demo/demo.sh from"
		echo "# contrib/postfix/main.cf.snippet (see contrib/postfix/rig)."
		for name in "${PF_ORDER[@]}"; do
			echo "$name = ${PF_PARAM[$name]}"
		done
	} >"$PF_ETC/main.cf"
}

# master.cf: contrib/postfix/master.cf.snippet as shipped, with its two
# smtpd listeners moved to the demo's ports, plus the services every
# Postfix needs, none chrooted.
write_master_cf() {
	sed -e "s/^smtp\([[:space:]]\+inet[[:space:]]\)/127.0.0.1:$SMTP_PORT\1/" \
		-e "s/^127\.0\.0\.1:10026\([[:space:]]\+inet[[:space:]]\)/127.0.0.1:$REINJECT_PORT\1/" \
		"$REPO/contrib/postfix/master.cf.snippet" >"$PF_ETC/master.cf"
	grep -q "^127\.0\.0\.1:$SMTP_PORT[[:space:]]\+inet[[:space:]]\+n[[:space:]]\+-[[:space:]]\+n[[:space:]]" "$PF_ETC/master.cf" &&
		grep -q "^127\.0\.0\.1:$REINJECT_PORT[[:space:]]\+inet[[:space:]]\+n[[:space:]]\+-[[:space:]]\+n[[:space:]]" "$PF_ETC/master.cf" ||
		die "master.cf.snippet: want an unchrooted \"smtp inet\" and a \"127.0.0.1:10026 inet\" service"
	cat >>"$PF_ETC/master.cf" <<'EOF'

# --- demo services (not part of the shipped snippet) ---
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
virtual   unix  -       n       n       -       -       virtual
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
}

# prepare_queue creates the queue folders listed in postfix-files with their
# owners and modes and touches quick-start, so "postfix start" skips its
# (slow) integrity checks. Without postfix-files the checks just run.
prepare_queue() {
	local files=/etc/postfix/postfix-files
	[ -r "$files" ] || return 0
	local path type owner group mode rest
	while IFS=: read -r path type owner group mode rest; do
		case "$path" in '$queue_directory/'*) ;; *) continue ;; esac
		path=${path#\$queue_directory/}
		[ "$type" = d ] && [[ $path != */* ]] || continue
		case "$owner" in '$mail_owner') owner=postfix ;; *) owner=root ;; esac
		case "$group" in '$setgid_group') group=postdrop ;; *) group=root ;; esac
		mkdir -p "$PF_SPOOL/$path"
		chown "$owner:$group" "$PF_SPOOL/$path"
		chmod "$mode" "$PF_SPOOL/$path"
	done <"$files"
	touch "$PF_SPOOL/quick-start"
}

start_postfix() {
	step "Starting a private Postfix on 127.0.0.1:$SMTP_PORT (reinjection on 127.0.0.1:$REINJECT_PORT)"
	# data_directory must belong to postfix (master.lock).
	mkdir -m 0700 "$PF_DATA"
	chown postfix:postfix "$PF_DATA"
	# Members' mailboxes: virtual(8) writes them as nobody.
	mkdir -m 0755 "$MAILDIR"
	chown nobody "$MAILDIR"
	local name
	for name in "${MEMBERS[@]}"; do
		printf '%s@%s\t%s\n' "$name" "$MEMBER_DOMAIN" "$name"
	done >"$DIR/vmailbox"

	write_main_cf
	write_master_cf
	# Postfix re-reads a config file until its mtime is 2s in the past; a
	# fresh one costs every postfix command 1.5s. Backdate them.
	touch -d '1 hour ago' "$PF_ETC/main.cf" "$PF_ETC/master.cf"
	prepare_queue

	MAIL_CONFIG="$PF_ETC" postfix -c "$PF_ETC" start 2>&1 | indent ||
		die "postfix start failed"
	PF_STARTED=1
	wait_for 30 "smtpd" smtp_greets "$SMTP_PORT" || die "no SMTP greeting on 127.0.0.1:$SMTP_PORT within 30s"
	wait_for 30 "reinjection smtpd" smtp_greets "$REINJECT_PORT" ||
		die "no SMTP greeting on 127.0.0.1:$REINJECT_PORT within 30s"
	say "config $PF_ETC, queue $PF_SPOOL, log $MAILLOG, mailboxes $MAILDIR"
	say "main.cf, the listcrypt lines:"
	postconf -c "$PF_ETC" -n | grep -E '^(smtpd_milters|milter_default_action|milter_protocol|relay_domains|virtual_mailbox_domains) ' | indent
	ok "Postfix answers on 127.0.0.1:$SMTP_PORT and 127.0.0.1:$REINJECT_PORT"
}

# --- the post

write_post() {
	step "Alice writes a post, signs it with her key and encrypts it to the list key"
	local inner="$DIR/post/inner.txt" outer="$DIR/post/post.eml"
	# The inner MIME entity: what only the list (and then the members) see.
	to_crlf >"$inner" <<EOF
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 7bit

Hello everyone,

$POST_LINE

Nobody but the members of devs can read this: the list decrypted my post,
checked my signature and encrypted it again to each of you.

Alice
EOF
	say "the text (inner MIME entity, $inner):"
	tr -d '\r' <"$inner" | indent
	say "\$ gpg --sign --encrypt --armor -r $LIST -u $SENDER@$MEMBER_DOMAIN"
	gpg_as "$SENDER" --sign --encrypt --armor -r "$LIST" -u "$SENDER@$MEMBER_DOMAIN" \
		-o "$DIR/post/inner.asc" "$inner" 2>/dev/null || die "alice's gpg could not sign and encrypt"
	# RFC 3156 PGP/MIME: multipart/encrypted with the version part and the
	# armored OpenPGP message.
	local boundary="=-listcrypt-demo-$RANDOM$RANDOM"
	{
		cat <<EOF
From: Alice <$SENDER@$MEMBER_DOMAIN>
To: $LIST
Subject: Release planning
Message-ID: <demo-$(date +%s)-$$@$MEMBER_DOMAIN>
Date: $(LC_ALL=C date -R)
MIME-Version: 1.0
Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";
 boundary="$boundary"

This is an OpenPGP/MIME encrypted message (RFC 3156).
--$boundary
Content-Type: application/pgp-encrypted
Content-Description: PGP/MIME version identification

Version: 1

--$boundary
Content-Type: application/octet-stream; name="encrypted.asc"
Content-Description: OpenPGP encrypted message
Content-Disposition: inline; filename="encrypted.asc"

EOF
		cat "$DIR/post/inner.asc"
		printf '\n--%s--\n' "$boundary"
	} | to_crlf >"$outer"
	say "the post as sent ($outer):"
	tr -d '\r' <"$outer" | sed -n '1,/^-----BEGIN PGP MESSAGE-----$/p' | indent
	echo "      | ...   ($(grep -c '' "$outer") lines in all)"
}

send_post() {
	step "Alice sends the post to $LIST over SMTP (curl to 127.0.0.1:$SMTP_PORT)"
	say "Postfix hands it to listcrypt-milter, which decrypts it with the list key,"
	say "checks that alice's registered key signed it and that it is no replay,"
	say "then encrypts one copy per batch of members and signs it as the list."
	local reply
	alive "$MILTER_PID" || die "listcrypt-milter is no longer running; see $DIR/milter.log"
	send_mail "$DIR/post/post.eml" "$SENDER@$MEMBER_DOMAIN" "$LIST" "$DIR/post/post.reply" ||
		die "the post was refused: $(cat "$DIR/post/post.reply")"
	reply=$(cat "$DIR/post/post.reply")
	say "SMTP reply: $reply"
	case "$reply" in 250*) ok "accepted" ;; *) die "unexpected reply: $reply" ;; esac
}

# delivered NAME: NAME's mailbox holds a complete copy from the list.
delivered() {
	local box="$MAILDIR/$1"
	[ -s "$box" ] && grep -q '^List-Id:' "$box" && grep -q '^-----END PGP MESSAGE-----' "$box"
}

all_delivered() {
	local name
	for name in "${MEMBERS[@]}"; do
		delivered "$name" || return 1
	done
}

# maillog_has_deliveries: postlogd has logged one delivery per member.
maillog_has_deliveries() {
	[ "$(grep -c 'status=sent' "$MAILLOG")" -ge "${#MEMBERS[@]}" ]
}

wait_delivery() {
	step "Waiting for the copies in the members' mailboxes ($MAILDIR)"
	if ! wait_for 60 "delivery" all_delivered; then
		bad "not every member got a copy within 60s; mail queue:"
		postqueue -c "$PF_ETC" -p 2>&1 | indent
	fi
	local name
	for name in "${MEMBERS[@]}"; do
		if delivered "$name"; then
			ok "$name: $(grep -c '^From ' "$MAILDIR/$name") message(s) in $MAILDIR/$name"
		else
			bad "$name: nothing in $MAILDIR/$name"
		fi
	done
	say "the milter's decision (from $DIR/milter.log):"
	grep 'msg=post ' "$DIR/milter.log" | cut -c1-400 | indent || true
	# postlogd writes the log lines a little after the deliveries.
	wait_for 5 "maillog" maillog_has_deliveries || true
	say "Postfix's log (from $MAILLOG): copies received on the reinjection port, deliveries:"
	grep -E 'listcrypt-reinject/smtpd\[[0-9]+\]: [0-9A-F]+: client=|status=' "$MAILLOG" |
		sed 's/^[A-Z][a-z][a-z] [ 0-9]*[0-9] [0-9:]* [^ ]* //; s/, delays=[^,]*//' | cut -c1-160 | indent || true
	local qid to
	for qid in $(sed -n 's/.*listcrypt-reinject\/smtpd\[[0-9]*\]: \([0-9A-F]*\): client=.*/\1/p' "$MAILLOG"); do
		to=$(sed -n "s/.* $qid: to=<\([^>]*\)>.*/\1/p" "$MAILLOG" | tr '\n' ' ')
		say "the copy for ${to% } (a later batch) went through the reinjection port ($qid)"
	done
}

# outer_headers FILE: the header block of the first message in an mbox,
# without the mbox "From " line and the Received trace.
outer_headers() {
	awk '
		NR == 1 && /^From / { next }
		/^$/ { exit }
		/^[^ \t]/ { skip = ($0 ~ /^(Received|Delivered-To|X-Original-To):/) }
		!skip { print }
	' "$1"
}

DECRYPTED=()
FAILED=()
read_copies() {
	local name box out err rc
	for name in "${MEMBERS[@]}"; do
		step "${name^} reads the list's copy, with nothing but ${name^}'s own GnuPG home"
		box="$MAILDIR/$name"
		if ! delivered "$name"; then
			bad "no copy for $name"
			FAILED+=("$name")
			continue
		fi
		say "outer headers (what any server on the way sees):"
		outer_headers "$box" | indent
		out="$DIR/post/$name.decrypted.txt"
		err="$DIR/post/$name.gpg.txt"
		say "\$ GNUPGHOME=$DIR/gnupg/$name gpg --decrypt"
		# Hidden recipients: gpg 2.2 tries each secret key on the zero key
		# IDs, reports the failed tries and may exit 2 although it
		# decrypted. Judge by what it printed.
		rc=0
		sed -n '/^-----BEGIN PGP MESSAGE-----/,/^-----END PGP MESSAGE-----/p' "$box" |
			GNUPGHOME="$DIR/gnupg/$name" gpg --decrypt >"$out" 2>"$err" || rc=$?
		say "gpg said (exit $rc):"
		grep -v 'scdaemon' "$err" | indent
		say "decrypted content:"
		tr -d '\r' <"$out" | indent
		if grep -q 'Good signature from "devs <devs@lists.example.org>"' "$err" &&
			grep -qF "$POST_LINE" "$out"; then
			ok "$name decrypted the post and verified the list's signature"
			DECRYPTED+=("$name")
		else
			bad "$name could not decrypt and verify the copy"
			FAILED+=("$name")
		fi
	done
}

send_plain() {
	step "Someone sends a plain, unencrypted post: refused during SMTP"
	local plain="$DIR/post/plain.eml" reply rc=0
	to_crlf >"$plain" <<EOF
From: Bob <bob@$MEMBER_DOMAIN>
To: $LIST
Subject: quick question
Message-ID: <demo-plain-$(date +%s)-$$@$MEMBER_DOMAIN>
Date: $(LC_ALL=C date -R)
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

Is the release still on Friday?
EOF
	send_mail "$plain" "bob@$MEMBER_DOMAIN" "$LIST" "$DIR/post/plain.reply" || rc=$?
	reply=$(cat "$DIR/post/plain.reply")
	say "SMTP reply: $reply"
	PLAIN_REPLY=$reply
	if [ "$rc" -ne 0 ] && [[ $reply == 550* ]]; then
		ok "refused with 550: the sender's own MTA tells them why (no bounce from the list)"
	else
		bad "expected a 550 refusal (curl exit $rc)"
		REFUSALS_OK=0
	fi
}

send_replay() {
	step "Someone replays alice's captured post (same ciphertext, new Message-ID): refused"
	say "(the very same transaction again, from alice's own MTA, counts as its retry: accepted, nothing sent twice)"
	local reply rc=0
	sed 's/^Message-ID: <demo-/Message-ID: <replayed-demo-/' "$DIR/post/post.eml" >"$DIR/post/replay.eml"
	send_mail "$DIR/post/replay.eml" "mallory@$MEMBER_DOMAIN" "$LIST" "$DIR/post/replay.reply" || rc=$?
	reply=$(cat "$DIR/post/replay.reply")
	say "SMTP reply: $reply"
	REPLAY_REPLY=$reply
	if [ "$rc" -ne 0 ] && [[ $reply == 5* ]]; then
		ok "refused: the list remembers signatures and ciphertexts it has seen"
	else
		bad "expected a 5xx refusal of the replay (curl exit $rc)"
		REFUSALS_OK=0
	fi
}

summary() {
	step "Summary"
	say "list:             $LIST (key in $DIR/keys/devs.asc)"
	say "post from alice:  accepted, $(grep -c '' "$DIR/post/post.eml") lines of PGP/MIME"
	say "decrypted by:     ${DECRYPTED[*]:-nobody}"
	[ "${#FAILED[@]}" -eq 0 ] || say "${R}NOT decrypted by: ${FAILED[*]}${N}"
	say "plain post:       $PLAIN_REPLY"
	say "replayed post:    $REPLAY_REPLY"
	say "demo folder:      $DIR (kept: mailboxes in mail/, logs maillog and milter.log)"
}

# ---------------------------------------------------------------- main

REFUSALS_OK=1
PLAIN_REPLY=""
REPLAY_REPLY=""
main() {
	local began=$SECONDS
	preflight
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	install_missing
	fresh_folder
	SMTP_PORT=$(free_port "${DEMO_SMTP_PORT:-2525}") || die "no free port from ${DEMO_SMTP_PORT:-2525} on"
	REINJECT_PORT=$(free_port "${DEMO_REINJECT_PORT:-10026}" "$SMTP_PORT") ||
		die "no free port from ${DEMO_REINJECT_PORT:-10026} on"
	create_list
	add_members
	start_milter
	start_postfix
	write_post
	send_post
	wait_delivery
	read_copies
	send_plain
	send_replay
	summary
	if [ "${#FAILED[@]}" -ne 0 ] || [ "$REFUSALS_OK" -ne 1 ]; then
		printf '\n%sdemo FAILED in %ds%s\n' "$R" $((SECONDS - began)) "$N"
		return 1
	fi
	printf '\n%sdemo OK in %ds: every member decrypted the list copy%s\n' "$G$B" $((SECONDS - began)) "$N"
}

main "$@"
