//! What the package is built from, checked without root: `tarpit man`,
//! `tarpit man --dir`, `tarpit completions SHELL`, and the shipped config.

mod support;

use std::process::Command;
use support::bin;

fn tarpit(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(bin()).args(args).output().expect("run tarpit");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn man_page_is_roff_generated_from_the_cli() {
    let (ok, page, err) = tarpit(&["man"]);
    assert!(ok, "{err}");
    assert!(page.contains(".TH tarpit 1"), "{page}");
    // Every subcommand is listed, with the extra sections.
    for want in [
        "serve",
        "watch",
        "stats",
        "completions",
        ".SH FILES",
        "/etc/tarpit/tarpit.nft",
        ".SH SEE ALSO",
    ] {
        assert!(page.contains(want), "{want:?} missing");
    }
}

#[test]
fn man_dir_writes_one_page_per_subcommand() {
    let dir = std::env::temp_dir().join(format!("tarpit-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (ok, _, err) = tarpit(&["man", "--dir", dir.to_str().unwrap()]);
    assert!(ok, "{err}");
    for page in [
        "tarpit.1",
        "tarpit-serve.1",
        "tarpit-watch.1",
        "tarpit-completions.1",
    ] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap_or_default();
        assert!(text.contains(".TH"), "{page}: {text}");
    }
    let serve = std::fs::read_to_string(dir.join("tarpit-serve.1")).unwrap();
    assert!(serve.contains("listen"), "tarpit-serve.1 lacks --listen");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn completions_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef tarpit"),
        ("fish", "complete -c tarpit"),
    ] {
        let (ok, out, err) = tarpit(&["completions", shell]);
        assert!(ok, "{shell}: {err}");
        assert!(out.contains(marker), "{shell}: no {marker:?}");
        assert!(
            out.contains("serve") && out.contains("watch"),
            "{shell}: subcommands missing"
        );
    }
    let (ok, _, err) = tarpit(&["completions", "tcsh"]);
    assert!(!ok && err.contains("tcsh"), "{err}");
}

#[test]
fn shipped_config_is_valid_for_both_daemons() {
    let conf = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/tarpit.toml");
    let (ok, out, err) = tarpit(&["--config", conf, "check-config"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("multi-ban") && out.contains("port 2222"),
        "{out}"
    );
}
