//! The systemd units in deploy/systemd pass systemd's own checks:
//! `systemd-analyze verify` (syntax, unknown keys, the binary they start) and
//! `systemd-analyze security` (the hardening the issue asks for, scored).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

const UNITS: [&str; 3] = ["tarpit.service", "tarpit-watch.service", "tarpit.socket"];

fn have_systemd_analyze(test: &str) -> bool {
    if support::netns::which("systemd-analyze") {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: systemd-analyze missing in CI (tests/run-all.sh installs systemd)");
    }
    eprintln!("SKIP {test}: systemd-analyze not installed");
    false
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Copies the units into a fresh directory with ExecStart pointing at the
/// binary this test run built, so `verify` checks a command that exists.
fn staged_units(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tarpit-units-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for u in UNITS {
        let text = std::fs::read_to_string(repo().join("deploy/systemd").join(u)).unwrap();
        let text = text.replace("/usr/bin/tarpit", env!("CARGO_BIN_EXE_tarpit"));
        std::fs::write(dir.join(u), text).unwrap();
    }
    dir
}

fn analyze(args: &[&str], unit: &Path) -> (bool, String, String) {
    let out = Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .expect("run systemd-analyze");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn units_pass_systemd_analyze_verify() {
    if !have_systemd_analyze("units_pass_systemd_analyze_verify") {
        return;
    }
    let dir = staged_units("verify");
    for u in UNITS {
        let (ok, out, err) = analyze(&["verify", "--man=no"], &dir.join(u));
        // verify prints every finding (unknown key, bad value, missing
        // binary) on stderr, some of them without failing: treat any as one.
        assert!(
            ok && err.trim().is_empty(),
            "systemd-analyze verify {u}:\n{out}{err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The "Overall exposure level" systemd gives a service (0 = locked down,
/// 10 = unprotected).
fn exposure(report: &str) -> f64 {
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure line in:\n{report}"));
    line.split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"))
}

#[test]
fn services_are_hardened_and_scored() {
    if !have_systemd_analyze("services_are_hardened_and_scored") {
        return;
    }
    let dir = staged_units("security");
    for u in ["tarpit.service", "tarpit-watch.service"] {
        let (_, out, err) = analyze(&["security", "--offline=yes", "--no-pager"], &dir.join(u));
        let score = exposure(&out);
        println!("systemd-analyze security {u}: exposure {score}");
        // Each check the issue asks for shows up as passed (✓) in the report.
        for want in [
            "NoNewPrivileges=",
            "ProtectSystem=",
            "ProtectHome=",
            "PrivateTmp=",
            "PrivateDevices=",
            "SystemCallFilter=~@swap",
            "RestrictAddressFamilies=~AF_PACKET",
            "User=/DynamicUser=",
            "CapabilityBoundingSet=~CAP_SYS_ADMIN",
        ] {
            assert!(
                out.lines()
                    .any(|l| l.trim_start().starts_with('✓') && l.contains(want)),
                "{u}: {want} not passed in:\n{out}{err}"
            );
        }
        // "OK" in systemd's own words is below 2.0; guard against a
        // hardening line being dropped.
        assert!(score < 2.0, "{u} exposure {score}:\n{out}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Each service keeps exactly the capability it needs: binding low ports for
/// serve, changing nftables for watch.
#[test]
fn capabilities_are_the_minimum() {
    let read = |u: &str| std::fs::read_to_string(repo().join("deploy/systemd").join(u)).unwrap();
    let key = |text: &str, k: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(|v| v.trim().to_string())
            .collect()
    };
    let serve = read("tarpit.service");
    let watch = read("tarpit-watch.service");
    assert_eq!(
        key(&serve, "CapabilityBoundingSet"),
        ["CAP_NET_BIND_SERVICE"]
    );
    assert_eq!(key(&serve, "AmbientCapabilities"), ["CAP_NET_BIND_SERVICE"]);
    assert_eq!(key(&watch, "CapabilityBoundingSet"), ["CAP_NET_ADMIN"]);
    assert_eq!(key(&watch, "AmbientCapabilities"), ["CAP_NET_ADMIN"]);
    assert_eq!(key(&serve, "Type"), ["notify"]);
    assert_eq!(key(&serve, "LimitNOFILE"), ["1048576"]);
    assert_eq!(key(&watch, "PartOf"), ["nftables.service"]);
    // `systemctl reload tarpit-watch` is SIGHUP (tests/watch_reload.rs).
    assert_eq!(key(&watch, "ExecReload"), ["/bin/kill -HUP $MAINPID"]);
    let socket = read("tarpit.socket");
    assert_eq!(key(&socket, "ReceiveBuffer"), ["1"]);
}
