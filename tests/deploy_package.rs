//! The Debian package: `deploy/debian/build-deb.sh` builds it with
//! `cargo deb` from the binary under test (no second build), `dpkg -i`
//! installs it on this machine (CI is root), and the installed files work:
//! `tarpit --version`, `man -l` on the installed pages, the completions, the
//! default config, the system user, the conffiles, and the units checked by
//! systemd-analyze with their real paths. Purged afterwards.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use support::is_root;
use support::netns::which;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn sh(script: &str) -> String {
    run(Command::new("sh").arg("-c").arg(script))
}

/// Purges the package even when an assertion fails.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "tarpit"]).output();
    }
}

fn cargo_deb_available() -> bool {
    which("cargo-deb")
        || std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".cargo/bin/cargo-deb").is_file())
            .unwrap_or(false)
}

#[test]
fn package_builds_installs_and_works() {
    let ready = is_root() && which("dpkg") && which("man") && cargo_deb_available();
    if !ready {
        if std::env::var_os("CI").is_some() {
            panic!("needs root, dpkg, man-db and cargo-deb in CI (tests/run-all.sh installs them)");
        }
        eprintln!("SKIP package_builds_installs_and_works: needs root, dpkg, man and cargo-deb");
        return;
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // A target dir holding only the binary under test as "release/tarpit":
    // cargo deb --no-build packages exactly it, in debug and release runs.
    let stage = std::env::temp_dir().join(format!("tarpit-deb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(stage.join("release")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_tarpit"), stage.join("release/tarpit")).unwrap();

    let out = run(Command::new("sh")
        .arg(repo.join("deploy/debian/build-deb.sh"))
        .args(["--no-build", "--fast"])
        .env("CARGO_TARGET_DIR", &stage));
    let deb = out
        .lines()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no .deb path in the output: {out}"));
    assert!(deb.is_file(), "{}", deb.display());

    let contents = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for f in [
        "./usr/bin/tarpit",
        "./lib/systemd/system/tarpit.service",
        "./lib/systemd/system/tarpit-watch.service",
        "./lib/systemd/system/tarpit.socket",
        "./etc/tarpit/tarpit.toml",
        "./etc/tarpit/tarpit.nft",
        "./etc/fail2ban/action.d/tarpit.conf",
        "./etc/fail2ban/jail.d/tarpit-multiban.conf",
        "./usr/share/man/man1/tarpit.1.gz",
        "./usr/share/man/man1/tarpit-serve.1.gz",
        "./usr/share/bash-completion/completions/tarpit",
        "./usr/share/zsh/vendor-completions/_tarpit",
        "./usr/share/fish/vendor_completions.d/tarpit.fish",
    ] {
        assert!(contents.contains(f), "{f} not in the package:\n{contents}");
    }

    let _installed = Installed;
    run(Command::new("dpkg")
        .arg("-i")
        .arg(&deb)
        .env("DEBIAN_FRONTEND", "noninteractive"));

    let v = run(Command::new("/usr/bin/tarpit").arg("--version"));
    assert_eq!(v.trim(), format!("tarpit {}", env!("CARGO_PKG_VERSION")));

    let page = sh("MANWIDTH=100 man -l /usr/share/man/man1/tarpit.1.gz 2>&1");
    for want in [
        "NAME",
        "tarpit",
        "SYNOPSIS",
        "serve",
        "watch",
        "FILES",
        "/etc/tarpit/tarpit.toml",
    ] {
        assert!(
            page.contains(want),
            "{want:?} missing from man -l tarpit.1:\n{page}"
        );
    }
    let serve = sh("MANWIDTH=100 man -l /usr/share/man/man1/tarpit-serve.1.gz 2>&1");
    assert!(
        serve.contains("--listen") || serve.contains("listen"),
        "{serve}"
    );

    let comp = run(Command::new("bash")
        .arg("-c")
        .arg(". /usr/share/bash-completion/completions/tarpit && complete -p tarpit"));
    assert!(comp.contains("tarpit"), "{comp}");

    // The system user the units run as, and its state directory.
    let pw = sh("getent passwd tarpit");
    assert!(
        pw.contains("/var/lib/tarpit") && pw.contains("nologin"),
        "{pw}"
    );
    assert!(sh("stat -c %U /var/lib/tarpit").trim() == "tarpit");

    // /etc files are conffiles: an admin's edits survive upgrades.
    let conf = sh("dpkg-query -W -f='${Conffiles}' tarpit");
    for f in [
        "/etc/tarpit/tarpit.toml",
        "/etc/tarpit/tarpit.nft",
        "/etc/fail2ban/action.d/tarpit.conf",
        "/etc/fail2ban/jail.d/tarpit-multiban.conf",
    ] {
        assert!(conf.contains(f), "{f} not a conffile: {conf}");
    }

    // The shipped config is valid for both daemons.
    let check = run(Command::new("/usr/bin/tarpit").args([
        "--config",
        "/etc/tarpit/tarpit.toml",
        "check-config",
    ]));
    assert!(check.contains("OK"), "{check}");

    // The installed units, with their real ExecStart and man page.
    if which("systemd-analyze") {
        let out = Command::new("systemd-analyze")
            .args([
                "verify",
                "/lib/systemd/system/tarpit.service",
                "/lib/systemd/system/tarpit-watch.service",
                "/lib/systemd/system/tarpit.socket",
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && err.trim().is_empty(),
            "verify installed units: {err}"
        );
    }

    // Purge removes the files and the state; the conffiles go too. (The
    // state is checked by a file of ours: any `tarpit serve` running on this
    // machine may create /var/lib/tarpit again for its default history.)
    let marker = Path::new("/var/lib/tarpit/state.db");
    std::fs::write(marker, "x").unwrap();
    run(Command::new("dpkg").args(["--purge", "tarpit"]));
    assert!(!Path::new("/usr/bin/tarpit").exists());
    assert!(!Path::new("/etc/tarpit/tarpit.toml").exists());
    assert!(!Path::new("/etc/tarpit/tarpit.nft").exists());
    assert!(!marker.exists(), "purge left the state behind");
    let _ = std::fs::remove_dir_all(&stage);
}
