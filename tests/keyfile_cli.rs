//! An explicit `--key-file` that cannot be used stops `tarpit serve
//! --engine stateless` with exit 2 before anything is bound (before: a
//! warning, and the file silently replaced by a new key). Needs no root:
//! the check comes first.

mod support;

use std::process::Command;
use support::bin;

#[test]
fn malformed_or_symlinked_key_file_is_a_config_error() {
    let dir = std::env::temp_dir().join(format!("tarpit-keycli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("cookie.key");
    std::fs::write(&key, "not a key\n").unwrap();
    let run = |p: &std::path::Path| {
        Command::new(bin())
            .args([
                "serve",
                "--engine",
                "stateless",
                "--control",
                "off",
                "--history",
                "off",
            ])
            .arg("--key-file")
            .arg(p)
            .output()
            .unwrap()
    };
    let out = run(&key);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("malformed") && err.contains("cookie.key"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&key).unwrap(), "not a key\n");

    let link = dir.join("link.key");
    std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
    let out = run(&link);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("symlink"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
