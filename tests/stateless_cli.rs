//! The stateless engine's configuration through the real binary: mistakes
//! name file, line and key; `check-config` shows what the watcher installs.

use std::process::Command;

fn run(conf: &str, args: &[&str]) -> (i32, String, String) {
    let dir = std::env::temp_dir().join(format!(
        "tp-slcli-{}-{}",
        std::process::id(),
        args.join("_")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tarpit.toml");
    std::fs::write(&path, conf).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tarpit"))
        .arg("--config")
        .arg(&path)
        .args(args)
        .output()
        .expect("run tarpit");
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_validates_the_stateless_keys() {
    let (code, _, err) = run(
        "[serve]\nengine = \"stateless\"\nflow_idle = \"never\"\n",
        &["check-config"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(":3: key `serve.flow_idle`"), "{err}");
    let (code, _, err) = run("[serve]\nengine = \"quantum\"\n", &["check-config"]);
    assert_eq!(code, 2);
    assert!(err.contains(":2: key `serve.engine`"), "{err}");
    let (code, _, err) = run("[watch]\n\nengine = \"stateles\"\n", &["check-config"]);
    assert_eq!(code, 2);
    assert!(err.contains(":3: key `watch.engine`"), "{err}");
    let (code, out, err) = run(
        "[serve]\nengine = \"stateless\"\nnflog_group = 9\n[watch]\nengine = \"stateless\"\nnflog_group = 9\n",
        &["check-config"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("log to nflog group 9 and drop"), "{out}");
}

#[test]
fn a_key_for_the_engine_not_in_use_names_its_line() {
    let (code, _, err) = run(
        "[serve]\nper_ip = 3\nflow_cap = 10\n",
        &["--log-level", "warn", "check-config"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(":3: key `serve.flow_cap`"), "{err}");
    let (code, _, err) = run(
        "[serve]\nengine = \"stateless\"\n\nlifetime_min = \"1m\"\n",
        &["serve", "--history", "off", "--control", "off"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(":4: key `serve.lifetime_min`"), "{err}");
}

#[test]
fn serve_refuses_a_bad_stateless_setting_before_touching_the_network() {
    let (code, _, err) = run(
        "[serve]\nengine = \"stateless\"\nflow_cap = 0\n",
        &["serve", "--control", "off", "--history", "off"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("flow_cap"), "{err}");
}
