#!/usr/bin/env bash
# The Debian packages the dashboard's browser tests and the topology pictures use:
# chromium (driven by Playwright; no browser download) and graphviz (`dot` draws
# `tavrida2 topology --format svg`). Installs what is missing; needs root or sudo.
set -u
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v dot >/dev/null 2>&1 || missing+=(graphviz)
if [ ${#missing[@]} -eq 0 ]; then
    echo "chromium and graphviz are installed"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing: ${missing[*]}; install them with your system's packages (no apt-get here)" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "missing: ${missing[*]}; run as root: apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    sudo="sudo"
fi
echo "installing from Debian's packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null || true
if ! $sudo apt-get install -y -qq "${missing[@]}" >/dev/null; then
    echo "apt-get install ${missing[*]} failed" >&2
    exit 1
fi
command -v chromium >/dev/null 2>&1 || { echo "chromium is still missing" >&2; exit 1; }
echo "installed: ${missing[*]}"
