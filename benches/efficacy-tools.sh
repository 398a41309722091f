#!/usr/bin/env bash
# Installs the clients `cargo bench --bench efficacy` runs against the
# tarpit: the Debian packages (as root) and a venv with the PyPI clients
# (paramiko, asyncssh, requests) at $EFFICACY_PYENV (default
# target/efficacy-venv). The bench skips, by name, any tool still missing.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(openssh-client hydra nmap curl wget medusa ncrack endlessh python3-paramiko python3-venv iproute2 nftables)
need=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "efficacy-tools: need root to install: ${need[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # endlessh's package would start its service on port 22: deny service
    # starts while apt runs (the bench runs its own in a namespace).
    added_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        added_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -qq
    apt-get install -y -qq "${need[@]}"
    if [ -n "$added_policy" ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
fi

venv="${EFFICACY_PYENV:-$PWD/target/efficacy-venv}"
if ! "$venv/bin/python3" -c 'import paramiko, asyncssh, requests' >/dev/null 2>&1; then
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q paramiko asyncssh requests
fi
echo "efficacy-tools: ready (venv $venv)"
