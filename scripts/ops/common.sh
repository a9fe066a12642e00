# Shared by scripts/check-compose.sh and scripts/check-dashboards.sh (sourced, not run).
# Installs the tools the checks need on a fresh Debian machine: promtool/prometheus (Debian package `prometheus`) and
# PyYAML (Debian package `python3-yaml`, or pip for a non-Debian python3).

ops_apt_install() {
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "need root or sudo to apt-get install $*" >&2; return 1; }
    sudo="sudo"
  fi
  if [ -z "${OPS_APT_UPDATED:-}" ]; then
    $sudo apt-get update -qq >&2
    OPS_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >&2
}

# promtool and prometheus (the Debian package ships both; its service is not needed and not started here).
ops_need_prometheus() {
  if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    echo "installing the Debian package prometheus (promtool + prometheus)" >&2
    ops_apt_install prometheus
  fi
}

ops_need_pyyaml() {
  if ! python3 -c 'import yaml' >/dev/null 2>&1; then
    echo "installing PyYAML" >&2
    python3 -m pip install --quiet --disable-pip-version-check pyyaml >&2 2>/dev/null || ops_apt_install python3-yaml
  fi
}
