#!/usr/bin/env bash
# Make sure the PostgreSQL server the tests use answers on 127.0.0.1:5432 (user postgres, database
# test) with the pgvector extension available: start the local cluster if it is stopped, or install
# Debian's server if there is none; install pgvector for the server's major version if it lacks it.
# With EMBWARDEN_TEST_PG_URL set, the server is yours to run and this script does nothing.
set -euo pipefail
[ -n "${EMBWARDEN_TEST_PG_URL:-}" ] && exit 0

answers() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
as_postgres() { if [ "$(id -u)" = 0 ]; then su postgres -c "$*"; else sudo -u postgres sh -c "$*"; fi; }

if ! answers; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
      echo "No PostgreSQL server on 127.0.0.1:5432. Install one (Debian: apt-get install postgresql)," >&2
      echo "or set EMBWARDEN_TEST_PG_URL=postgresql://user:password@host:port/database" >&2
      exit 1
    fi
    echo "installing PostgreSQL from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    ver=$(ls /etc/postgresql | sort -V | tail -n 1)
    # Tests connect as postgres over TCP without a password, as on the CI machines.
    sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "/etc/postgresql/$ver/main/pg_hba.conf"
  fi
  ver=$(ls /etc/postgresql | sort -V | tail -n 1)
  echo "starting PostgreSQL $ver"
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start || pg_ctlcluster "$ver" main start
  for _ in $(seq 1 30); do answers && break; sleep 1; done
  answers || { echo "PostgreSQL did not start on 127.0.0.1:5432" >&2; exit 1; }
fi

if command -v psql >/dev/null; then
  if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" 2>/dev/null | grep -q 1; then
    psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE test" || as_postgres "createdb test"
  fi
fi

# The pgvector extension (sources with a `vector` column): Debian's postgresql-<major>-pgvector for
# the running server; where the release has none (bookworm ships it for no server version), build
# Debian's own source package of it (from the stable release, on this machine's Debian mirror)
# against the server's headers. Each test database still runs CREATE EXTENSION itself.
server_major() { psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT current_setting('server_version_num')::int / 10000"; }
has_vector() { psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'" | grep -q 1; }

build_pgvector_from_debian_source() {
  local ver=$1 work mirror
  work=$(mktemp -d)
  mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' | awk '$2 !~ /-(security|updates|backports)$/ {print $1; exit}')
  [ -n "$mirror" ] || { echo "no Debian mirror configured for apt" >&2; return 1; }
  mkdir -p "$work/lists/partial"
  echo "deb-src $mirror stable main" > "$work/sources.list"
  local apt_opts=(-o "Dir::Etc::sourcelist=$work/sources.list" -o Dir::Etc::sourceparts=/dev/null
                  -o "Dir::State::Lists=$work/lists" -o APT::Sandbox::User=root)
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-server-dev-$ver" dpkg-dev make gcc >/dev/null
  apt-get "${apt_opts[@]}" update -qq
  (cd "$work" && apt-get "${apt_opts[@]}" source -qq pgvector >/dev/null)
  local dir
  dir=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'pgvector-*' | head -n 1)
  [ -n "$dir" ] || { echo "could not unpack Debian's pgvector source package" >&2; return 1; }
  make -s -C "$dir" PG_CONFIG="/usr/lib/postgresql/$ver/bin/pg_config" with_llvm=no >/dev/null
  make -s -C "$dir" PG_CONFIG="/usr/lib/postgresql/$ver/bin/pg_config" with_llvm=no install >/dev/null
  rm -rf "$work"
}

if command -v psql >/dev/null && ! has_vector; then
  ver=$(server_major)
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || [ ! -d "/usr/lib/postgresql/$ver" ]; then
    echo "The PostgreSQL server on 127.0.0.1:5432 lacks the pgvector extension: install" >&2
    echo "postgresql-$ver-pgvector (or pgvector from source) on it." >&2
    exit 1
  fi
  echo "installing pgvector for PostgreSQL $ver"
  apt-get update -qq
  if apt-cache policy "postgresql-$ver-pgvector" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-$ver-pgvector" >/dev/null
  else
    echo "Debian has no postgresql-$ver-pgvector for this release; building Debian's pgvector source package"
    build_pgvector_from_debian_source "$ver"
  fi
  has_vector || { echo "pgvector is installed but PostgreSQL $ver does not list the vector extension" >&2; exit 1; }
fi
