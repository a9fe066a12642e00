# Sourced by the README's commands: bootstraps what builds and tests need on a fresh machine.
# - libtorch 2.13.0 from PyPI into ~/.cache/confide (LIBTORCH for torch-sys; binaries get an rpath, so
#   nothing is needed at run time);
# - PostgreSQL for the store tests (this machine kind runs it on 127.0.0.1:5432; start it if it stopped).
LIBTORCH="$(scripts/bootstrap-libtorch.sh)"
export LIBTORCH
export LIBTORCH_CXX11_ABI=1
export CONFIDE_TEST_POSTGRES_URL="${CONFIDE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
fi
