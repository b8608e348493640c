#!/bin/sh
# Installs a minkms node as a systemd service, on a machine where the minkms package is
# installed (`npm install -g minkms-VERSION.tgz`, or `npm install -g minkms@VERSION`):
#
#   - the system user and group `minkms`;
#   - /var/lib/minkms (0700, the key database), /var/log/minkms (0750, the audit log),
#     /etc/minkms (0755) with certs/ and certs/CAs/ (0750, group minkms);
#   - /etc/minkms/config.yaml from examples/config.yaml (0640 root:minkms), unless present;
#   - a self-signed TLS certificate for this host in /etc/minkms/certs, unless one is present
#     (replace it with one of your CA for production), with openssl;
#   - /etc/default/minkms (0600 root) with a new soft HSM key, unless present;
#   - /etc/systemd/system/minkms.service, then `systemctl daemon-reload`.
#
# It is idempotent: a second run changes nothing, and it never overwrites the configuration,
# the certificates or the environment file (the unit file is replaced when it differs).
# It does not start the service: `systemctl enable --now minkms` does.
#
# Usage: install.sh [--bin PATH] [--destdir DIR] [--no-tls] [--hostname NAME]
#   --bin PATH      the minkms executable (default: `minkms` on PATH)
#   --destdir DIR   install below DIR instead of / (also: DESTDIR=DIR), for packaging and
#                   tests: no user is created, nothing is chowned, systemd is not told
#   --no-tls        do not generate a self-signed certificate
#   --hostname NAME the certificate's name (default: `hostname -f`)
set -eu

usage() {
  sed -n '/^# Usage:/,/^set -eu/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

die() {
  echo "install.sh: $*" >&2
  exit 1
}

HERE=$(cd "$(dirname "$0")" && pwd)
BIN=""
DEST="${DESTDIR:-}"
TLS=yes
CERT_HOST=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) [ $# -ge 2 ] || usage; BIN=$2; shift 2 ;;
    --destdir|--prefix) [ $# -ge 2 ] || usage; DEST=$2; shift 2 ;;
    --no-tls) TLS=no; shift ;;
    --hostname) [ $# -ge 2 ] || usage; CERT_HOST=$2; shift 2 ;;
    -h|--help) usage ;;
    *) echo "install.sh: unknown argument '$1'" >&2; usage ;;
  esac
done
DEST=${DEST%/}

# ---------------------------------------------------------------- the minkms executable
if [ -z "$BIN" ]; then
  BIN=$(command -v minkms || true)
  [ -n "$BIN" ] || die "no minkms on PATH: install the package first (npm install -g minkms-VERSION.tgz), or give --bin PATH"
fi
[ -x "$BIN" ] || die "$BIN is not an executable file"
case "$BIN" in /*) ;; *) BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")" ;; esac
VERSION=$("$BIN" --version 2>/dev/null) || die "$BIN --version failed: is it minkms, and is node on PATH?"
# The unit runs with ProtectHome=yes: a minkms (or node) under /home or /root, e.g. the symlink
# that `npm install -g .` leaves pointing into a clone, is invisible to the service.
REAL=$(readlink -f "$BIN")
NODE=$(command -v node || true)
[ -n "$NODE" ] || die "no node on PATH (minkms needs Node.js 20 or newer)"
for p in "$REAL" "$(readlink -f "$NODE")"; do
  case "$p" in
    /home/*|/root/*|/run/user/*)
      die "$p is below /home, /root or /run/user, which the service cannot see (ProtectHome=yes): install the package with npm install -g minkms-VERSION.tgz (not a link to a clone), and node system-wide" ;;
  esac
done

# PATH of the service: the unit's default plus the directories of this minkms and node.
SERVICE_PATH=/usr/local/bin:/usr/bin:/bin
for d in "$(dirname "$NODE")" "$(dirname "$BIN")"; do
  case ":$SERVICE_PATH:" in *":$d:"*) ;; *) SERVICE_PATH="$d:$SERVICE_PATH" ;; esac
done

changed=0
note() { echo "install.sh: $*"; changed=1; }

# ---------------------------------------------------------------- user and group
if [ -z "$DEST" ]; then
  [ "$(id -u)" = 0 ] || die "run as root (or give --destdir DIR)"
  if ! getent group minkms >/dev/null; then
    groupadd --system minkms
    note "created group minkms"
  fi
  if ! getent passwd minkms >/dev/null; then
    NOLOGIN=$(command -v nologin || echo /usr/sbin/nologin)
    useradd --system --gid minkms --home-dir /var/lib/minkms --no-create-home --shell "$NOLOGIN" --comment "minkms key management server" minkms
    note "created user minkms"
  fi
fi

# owner OWNER:GROUP PATH — chown, except below --destdir (the user exists only on the target).
owner() {
  [ -n "$DEST" ] && return 0
  if [ "$(stat -c %U:%G "$2")" != "$1" ]; then chown "$1" "$2"; note "chown $1 $2"; fi
}

# dir MODE OWNER:GROUP PATH — creates or corrects a directory.
dir() {
  if [ ! -d "$DEST$3" ]; then
    mkdir -p "$DEST$3"
    note "created $3"
  fi
  if [ "$(stat -c %a "$DEST$3")" != "${1#0}" ]; then chmod "$1" "$DEST$3"; note "chmod $1 $3"; fi
  owner "$2" "$DEST$3"
}

# file MODE OWNER:GROUP SOURCE PATH [replace] — installs a file unless present (or, with
# `replace`, unless identical), then corrects its mode and owner.
file() {
  if [ ! -e "$DEST$4" ] || { [ "${5:-}" = replace ] && ! cmp -s "$3" "$DEST$4"; }; then
    mkdir -p "$(dirname "$DEST$4")"
    cp "$3" "$DEST$4.tmp.$$"
    chmod "$1" "$DEST$4.tmp.$$"
    mv -f "$DEST$4.tmp.$$" "$DEST$4"
    note "installed $4"
  fi
  if [ "$(stat -c %a "$DEST$4")" != "${1#0}" ]; then chmod "$1" "$DEST$4"; note "chmod $1 $4"; fi
  owner "$2" "$DEST$4"
}

dir 0700 minkms:minkms /var/lib/minkms
dir 0750 minkms:minkms /var/log/minkms
dir 0755 root:root /etc/minkms
dir 0750 root:minkms /etc/minkms/certs
dir 0750 root:minkms /etc/minkms/certs/CAs

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# ---------------------------------------------------------------- configuration
EXAMPLE="$HERE/../examples/config.yaml"
[ -f "$EXAMPLE" ] || die "$EXAMPLE is missing (install.sh runs from the package's deploy/ directory)"
file 0640 root:minkms "$EXAMPLE" /etc/minkms/config.yaml

# ---------------------------------------------------------------- TLS
if [ "$TLS" = yes ] && [ ! -e "$DEST/etc/minkms/certs/public.crt" ] && [ ! -e "$DEST/etc/minkms/certs/private.key" ]; then
  command -v openssl >/dev/null || die "openssl is needed to make a self-signed certificate (apt-get install openssl); or put your certificate in /etc/minkms/certs/public.crt and private.key, or pass --no-tls"
  [ -n "$CERT_HOST" ] || CERT_HOST=$(hostname -f 2>/dev/null || hostname)
  # ECDSA P-256, valid 1 year, for this host, localhost and the loopback addresses.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
    -subj "/CN=$CERT_HOST" \
    -addext "subjectAltName=DNS:$CERT_HOST,DNS:localhost,IP:127.0.0.1,IP:::1" \
    -addext "keyUsage=critical,digitalSignature" -addext "extendedKeyUsage=serverAuth" \
    -keyout "$TMP/private.key" -out "$TMP/public.crt" 2>"$TMP/openssl.log" || die "openssl failed: $(cat "$TMP/openssl.log")"
  file 0640 root:minkms "$TMP/private.key" /etc/minkms/certs/private.key
  file 0644 root:minkms "$TMP/public.crt" /etc/minkms/certs/public.crt
  echo "install.sh: the certificate is self-signed for $CERT_HOST: clients trust it with 'minkms … --ca /etc/minkms/certs/public.crt'; replace both files with ones from your CA for production"
fi

# ---------------------------------------------------------------- environment file
if [ ! -e "$DEST/etc/default/minkms" ]; then
  HSM_KEY=$("$BIN" --soft-hsm) || die "$BIN --soft-hsm failed"
  sed "s|^MINIO_KMS_HSM_KEY=.*|MINIO_KMS_HSM_KEY=$HSM_KEY|" "$HERE/minkms.env" >"$TMP/minkms.env"
  file 0600 root:root "$TMP/minkms.env" /etc/default/minkms
  echo "install.sh: /etc/default/minkms holds a new soft HSM key: keep a copy offline; every node of a cluster needs the same one"
else
  file 0600 root:root "$HERE/minkms.env" /etc/default/minkms
fi

# ---------------------------------------------------------------- unit
sed "s|^Environment=PATH=.*|Environment=PATH=$SERVICE_PATH|" "$HERE/minkms.service" >"$TMP/minkms.service"
file 0644 root:root "$TMP/minkms.service" /etc/systemd/system/minkms.service replace

if [ "$changed" = 1 ] && [ -z "$DEST" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi

if [ "$changed" = 0 ]; then
  echo "install.sh: minkms $VERSION ($BIN): nothing to change"
else
  echo "install.sh: minkms $VERSION ($BIN) installed${DEST:+ below $DEST}. Next:"
  echo "  systemctl enable --now minkms"
  echo "  journalctl -u minkms -g 'API Key'     # the root API key (unless admin.identity is set)"
fi
