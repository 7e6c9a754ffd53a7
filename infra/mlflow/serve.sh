#!/usr/bin/env bash
# MLflow tracking server on a Debian/Ubuntu VM, backed by a local PostgreSQL,
# with MLflow's own login (--app-name basic-auth; users in the same database).
#
#   read -rs MLFLOW_DB_PASSWORD && export MLFLOW_DB_PASSWORD   # not in shell history
#   read -rs MLFLOW_AUTH_ADMIN_PASSWORD && export MLFLOW_AUTH_ADMIN_PASSWORD   # first start
#   export MLFLOW_FLASK_SERVER_SECRET_KEY=$(openssl rand -hex 32)   # keep it fixed (file, unit)
#   bash infra/mlflow/serve.sh              # set up what is missing, then run mlflow (foreground)
#   bash infra/mlflow/serve.sh --dry-run    # only print the auth config and the mlflow command
#
# Safe to rerun: it installs PostgreSQL only if `psql` is missing, creates the
# role and database only if absent (and re-sets the role's password, so a
# changed MLFLOW_DB_PASSWORD takes effect), and reuses the venv.
# Run it as root or as a user with sudo; mlflow itself runs as the invoking
# user. Keep it running with tmux, or a systemd unit that sets the env below.
#
# Environment (defaults in brackets):
#   MLFLOW_DB_PASSWORD  required; password of the PostgreSQL role. Never printed,
#                       never on a command line (it reaches libpq as PGPASSWORD).
#   MLFLOW_FLASK_SERVER_SECRET_KEY  required by basic-auth (CSRF); random, fixed.
#   MLFLOW_AUTH_ADMIN_PASSWORD      needed on the first start only: MLflow creates
#                       the user `admin` with it (12+ characters), then ignores it.
#   MLFLOW_HOST         [127.0.0.1] interface to bind. Loopback by default: reach it
#                       through an SSH tunnel. Use a private address only behind a
#                       firewall (and TLS: basic auth sends passwords in clear text).
#   MLFLOW_PORT         [5000]
#   MLFLOW_ARTIFACTS    [/var/lib/mlflow/artifacts] where the server stores artifacts
#   MLFLOW_DB_USER      [mlflow]   MLFLOW_DB_NAME [mlflow]
#   MLFLOW_VENV         [$HOME/.venvs/mlflow]  (the auth config is written there too)
#   MLFLOW_VERSION      [3.17.2]   pinned to the client in the project's environment
#   PSYCOPG2_VERSION    [2.9.13]
set -euo pipefail

usage() { sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; }

DRY_RUN=0
case "${1:-}" in
  "") ;;
  --dry-run) DRY_RUN=1 ;;
  -h|--help) usage; exit 0 ;;
  *) usage >&2; exit 2 ;;
esac

: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD must be set (the PostgreSQL password for the MLflow role)}"
: "${MLFLOW_FLASK_SERVER_SECRET_KEY:?MLFLOW_FLASK_SERVER_SECRET_KEY must be set (basic-auth CSRF key: openssl rand -hex 32, kept fixed)}"
MLFLOW_HOST="${MLFLOW_HOST:-127.0.0.1}"
MLFLOW_PORT="${MLFLOW_PORT:-5000}"
MLFLOW_ARTIFACTS="${MLFLOW_ARTIFACTS:-/var/lib/mlflow/artifacts}"
MLFLOW_DB_USER="${MLFLOW_DB_USER:-mlflow}"
MLFLOW_DB_NAME="${MLFLOW_DB_NAME:-mlflow}"
MLFLOW_VENV="${MLFLOW_VENV:-$HOME/.venvs/mlflow}"
MLFLOW_VERSION="${MLFLOW_VERSION:-3.17.2}"
PSYCOPG2_VERSION="${PSYCOPG2_VERSION:-2.9.13}"
# PostgreSQL stays on loopback; only mlflow on this host talks to it.
DB_HOST=127.0.0.1
DB_PORT=5432

log() { printf '[serve.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Role/database names are put into SQL as identifiers: allow only plain ones.
for name in "$MLFLOW_DB_USER" "$MLFLOW_DB_NAME"; do
  [[ "$name" =~ ^[a-z_][a-z0-9_]*$ ]] || die "invalid PostgreSQL identifier: $name"
done
[[ "$MLFLOW_PORT" =~ ^[0-9]+$ ]] || die "MLFLOW_PORT must be a number"
[[ "$MLFLOW_DB_PASSWORD" != *$'\n'* ]] || die "MLFLOW_DB_PASSWORD must be a single line"

# No password in the URI: libpq takes it from PGPASSWORD (exported below).
# +psycopg2 names the driver installed here: SQLAlchemy >= 2.1 maps a bare
# postgresql:// to psycopg 3, which this venv doesn't have.
BACKEND_URI="postgresql+psycopg2://${MLFLOW_DB_USER}@${DB_HOST}:${DB_PORT}/${MLFLOW_DB_NAME}"
MLFLOW_CMD=(
  "$MLFLOW_VENV/bin/mlflow" server
  --host "$MLFLOW_HOST"
  --port "$MLFLOW_PORT"
  --backend-store-uri "$BACKEND_URI"
  --artifacts-destination "$MLFLOW_ARTIFACTS"
  --serve-artifacts
  --app-name basic-auth
)

# basic-auth's config (MLFLOW_AUTH_CONFIG_PATH). No secret in it: users and
# permissions go to the same database, whose password libpq takes from
# PGPASSWORD; the admin password stays in MLFLOW_AUTH_ADMIN_PASSWORD.
# NO_PERMISSIONS: a user sees only experiments they created or were granted
# (see infra/mlflow/basic_auth.ini and infra/README.md).
AUTH_CONFIG="$MLFLOW_VENV/basic_auth.ini"
AUTH_INI="[mlflow]
default_permission = NO_PERMISSIONS
database_uri = $BACKEND_URI
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
grant_default_workspace_access = false"

case "$MLFLOW_HOST" in
  127.*|localhost|::1) ;;
  *) log "warning: binding to $MLFLOW_HOST, not loopback: firewall the port, and put TLS in front if the path leaves a private network (basic auth sends passwords in clear text over HTTP)" ;;
esac

if (( DRY_RUN )); then
  log "dry run: nothing installed, written or started"
  log "auth config for MLFLOW_AUTH_CONFIG_PATH=$AUTH_CONFIG:"
  printf '%s\n' "$AUTH_INI" >&2
  printf '%q ' "${MLFLOW_CMD[@]}"; printf '\n'
  exit 0
fi

# Root runs things directly; anyone else goes through sudo.
if [[ $(id -u) -eq 0 ]]; then SUDO=(); else SUDO=(sudo); fi
as_postgres() {
  # cd / : the postgres user can't read the caller's cwd (avoids a warning).
  if [[ $(id -u) -eq 0 ]]; then (cd / && runuser -u postgres -- "$@")
  else (cd / && sudo -u postgres -- "$@"); fi
}

# 1. PostgreSQL. Checked by psql *and* the server binary: a host with only the
# client (postgresql-client) installed still needs the server package.
if ! command -v psql >/dev/null 2>&1 || ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
  log "installing postgresql (apt)"
  "${SUDO[@]}" apt-get update -q
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
fi
if ! pg_isready -q -h "$DB_HOST" -p "$DB_PORT"; then
  log "starting postgresql"
  if [[ -d /run/systemd/system ]]; then
    "${SUDO[@]}" systemctl enable --now postgresql
  else
    # containers / hosts without systemd
    "${SUDO[@]}" service postgresql start
  fi
  for _ in $(seq 30); do pg_isready -q -h "$DB_HOST" -p "$DB_PORT" && break; sleep 1; done
  pg_isready -q -h "$DB_HOST" -p "$DB_PORT" || die "postgresql did not come up on $DB_HOST:$DB_PORT"
fi

# 2. Role and database, idempotently. The SQL goes in on stdin (not argv), so
# the password never shows in `ps`; psql's :'var' quotes it as a literal.
log "ensuring role '$MLFLOW_DB_USER' and database '$MLFLOW_DB_NAME'"
pw_escaped=${MLFLOW_DB_PASSWORD//\\/\\\\}   # psql \set: backslash escapes...
pw_escaped=${pw_escaped//\'/\'\'}            # ...and '' for a quote
as_postgres psql --quiet --no-psqlrc -v ON_ERROR_STOP=1 -d postgres >/dev/null <<SQL
\set db_user '${MLFLOW_DB_USER}'
\set db_name '${MLFLOW_DB_NAME}'
\set db_pass '${pw_escaped}'
SELECT format('CREATE ROLE %I LOGIN', :'db_user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'db_user') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'db_user', :'db_pass') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db_name', :'db_user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db_name') \gexec
SQL
unset pw_escaped

# 3. MLflow in its own venv (keeps it off the system Python).
if [[ ! -x "$MLFLOW_VENV/bin/python" ]]; then
  if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    log "installing python3-venv (apt)"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
  fi
  python3 -m venv "$MLFLOW_VENV"
fi
# mlflow[auth]: the extra brings Flask-WTF, which --app-name basic-auth needs.
if ! "$MLFLOW_VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('mlflow') != '$MLFLOW_VERSION')" 2>/dev/null \
   || ! "$MLFLOW_VENV/bin/python" -c 'import psycopg2, flask_wtf' 2>/dev/null; then
  log "installing mlflow[auth]==$MLFLOW_VERSION and psycopg2-binary==$PSYCOPG2_VERSION into $MLFLOW_VENV"
  "$MLFLOW_VENV/bin/pip" install -q --disable-pip-version-check \
    "mlflow[auth]==$MLFLOW_VERSION" "psycopg2-binary==$PSYCOPG2_VERSION"
fi

# 4. Artifact directory, owned by the user that runs mlflow.
if [[ ! -d "$MLFLOW_ARTIFACTS" ]] || [[ ! -w "$MLFLOW_ARTIFACTS" ]]; then
  "${SUDO[@]}" install -d -m 750 -o "$(id -u)" -g "$(id -g)" "$MLFLOW_ARTIFACTS"
fi

# 5. The auth config, rewritten on every start (it holds no secret).
printf '%s\n' "$AUTH_INI" > "$AUTH_CONFIG"
export MLFLOW_AUTH_CONFIG_PATH="$AUTH_CONFIG"
export MLFLOW_FLASK_SERVER_SECRET_KEY
if [[ -n "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ]]; then
  export MLFLOW_AUTH_ADMIN_PASSWORD
else
  log "MLFLOW_AUTH_ADMIN_PASSWORD is not set: fine once the admin user exists; on the first start MLflow will refuse to start without it"
fi

# 6. Run (exec: signals from tmux/systemd reach mlflow directly). The
# passwords reach it only through the environment.
export PGPASSWORD="$MLFLOW_DB_PASSWORD"
log "starting mlflow on http://$MLFLOW_HOST:$MLFLOW_PORT"
exec "${MLFLOW_CMD[@]}"
