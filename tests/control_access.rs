//! Who may do what over the control socket (SO_PEERCRED): anyone who can
//! connect may read statistics, only root or the server's user may take
//! over, and only to the handover socket of the requesting process.
//! Before: any client could name any socket and receive every held
//! connection. Root only (a second uid is needed); loopback only.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;
use support::serve::Proc;
use support::wait_for;

const CLIENT: &str = r#"use IO::Socket::UNIX; my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $ARGV[0]) or die "connect: $!"; print $s "$ARGV[1]\n"; my $l = <$s>; print $l;"#;

/// Sends one request line as `uid` (via perl, in Debian's perl-base).
fn ask(uid: u32, path: &std::path::Path, req: &str) -> String {
    let out = Command::new("perl")
        .arg("-e")
        .arg(CLIENT)
        .arg(path)
        .arg(req)
        .uid(uid)
        .gid(uid)
        .output()
        .expect("perl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn takeover_needs_our_uid_and_the_requesters_own_socket() {
    if rustix::process::geteuid().as_raw() != 0 {
        eprintln!("skipping: needs root (a second uid)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("tarpit-ctlacc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ctl = dir.join("control.sock");
    let mut p = Proc::serve(&[
        "--listen",
        "127.0.0.1:0",
        "--control",
        ctl.to_str().unwrap(),
    ]);
    wait_for(10.0, "control socket", || ctl.exists().then_some(()));
    // As if nobody were in the socket's group: it may connect.
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o666)).unwrap();
    let nobody = 65534;
    let r = ask(nobody, &ctl, r#"{"cmd":"ping"}"#);
    assert!(r.contains("pong"), "{r}");
    let evil = dir.join("evil.sock");
    let req = format!(r#"{{"cmd":"takeover","socket":"{}"}}"#, evil.display());
    let r = ask(nobody, &ctl, &req);
    assert!(r.contains("permission denied"), "{r}");
    // Root, but a socket that is not the requester's handover socket.
    let r = ask(0, &ctl, &req);
    assert!(r.contains("\"ok\":false") && r.contains("must be"), "{r}");
    // The server kept running and serving.
    let r = ask(nobody, &ctl, r#"{"cmd":"ping"}"#);
    assert!(r.contains("pong"), "{r}");
    assert!(p.child.try_wait().unwrap().is_none(), "{}", p.log());
    assert!(p.term(10.0).success());
    let _ = std::fs::remove_dir_all(&dir);
}
