#!/usr/bin/env bash
# The whole test suite: installs the system packages the tests need (nftables,
# conntrack, iproute2, ...), checks formatting and lints, builds the
# benchmarks, and runs every test. Needs root: the integration tests create
# their own network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()

# crowdsec's postinst runs `cscli capi register`, which needs the internet and
# leaves the package half-configured without it. Its README.Debian: a comment
# line in online_api_credentials.yaml before installing skips the registration.
crowdsec_offline_credentials() {
    mkdir -p /etc/crowdsec
    if [ ! -s /etc/crowdsec/online_api_credentials.yaml ]; then
        echo '# no online API (tarpit test suite: LAPI runs offline)' > /etc/crowdsec/online_api_credentials.yaml
    fi
}
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v conntrack >/dev/null 2>&1 || need+=(conntrack)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v ss >/dev/null 2>&1 || need+=(iproute2)
# The stateless engine tests turn off veth checksum offload (full checksums on the wire).
command -v ethtool >/dev/null 2>&1 || need+=(ethtool)
# deploy tests: systemd-analyze checks the units, the real fail2ban drives our
# action and jail, man-db reads the packaged man page.
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v fail2ban-server >/dev/null 2>&1 || need+=(fail2ban)
command -v man >/dev/null 2>&1 || need+=(man-db)
# deploy_syscalls traces the daemons against the units' SystemCallFilter.
command -v strace >/dev/null 2>&1 || need+=(strace)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
# deploy_jails: the shipped jails against the real sshd, ssh client and nginx.
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v sshpass >/dev/null 2>&1 || need+=(sshpass)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl)  # classify test: a real HTTP(S) client
# tests/geoip.rs builds MaxMind DB files with PyPI's mmdb-writer and reads the
# GeoLite2 file that PyPI's maxminddb-geolite2 ships (in a venv, below).
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
# tests/policies.rs: paramiko (Debian's, run by /usr/bin/python3) is the real
# client whose per-read banner timeout the ssh bait must keep resetting.
/usr/bin/python3 -c 'import paramiko' >/dev/null 2>&1 || need+=(python3-paramiko)
# stats tests: the HTML report must render in headless Chromium; unshare and
# mount (util-linux, mount) give the history tests a small or read-only tmpfs.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
command -v mount >/dev/null 2>&1 || need+=(mount)
# crowdsec tests run Debian's LAPI offline on loopback (config and DB of their own).
command -v crowdsec >/dev/null 2>&1 || need+=(crowdsec)
command -v cscli >/dev/null 2>&1 || need+=(crowdsec)
if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "run-all: need root to install: ${need[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # Installing sshd or nginx must not start them on the machine (the tests
    # run their own in namespaces): deny service starts while apt runs.
    added_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        added_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -qq
    crowdsec_offline_credentials
    apt-get install -y -qq "${need[@]}"
    if [ -n "$added_policy" ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
fi
# A crowdsec left half-configured by an earlier run (its postinst registered
# with the online API and failed) breaks every later apt run: finish it.
if dpkg-query -W -f='${Status}' crowdsec 2>/dev/null | grep -q 'half-configured\|unpacked'; then
    crowdsec_offline_credentials
    dpkg --configure crowdsec
fi

export TARPIT_PYENV="${TARPIT_PYENV:-$PWD/target/pyenv}"
if ! "$TARPIT_PYENV/bin/python3" -c 'import mmdb_writer, netaddr, geolite2' >/dev/null 2>&1; then
    python3 -m venv "$TARPIT_PYENV"
    "$TARPIT_PYENV/bin/pip" install -q mmdb-writer==0.2.7 maxminddb-geolite2==2018.703
fi

# tests/deploy_package.rs packs the .deb with cargo-deb (a crates.io tool).
if ! command -v cargo-deb >/dev/null 2>&1 && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo-deb" ]; then
    cargo install cargo-deb --locked
fi

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo bench --no-run
cargo test --release --no-fail-fast

# Every fuzz target for a bounded time from its committed seeds (FUZZ_SECS,
# default 20 s each): a crash fails CI.
bash tests/fuzz.sh
