//! The human log format as a file or the journal gets it (stderr is a
//! pipe): no colour codes, and a peer's bytes stay inside the `head` field.
//! Traffic: loopback only.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use support::{bin, wait_for};

#[test]
fn human_log_on_a_pipe_has_no_colour_and_peer_bytes_cannot_forge_fields() {
    let mut child = Command::new(bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--control",
            "off",
            "--history",
            "off",
        ])
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let l2 = lines.clone();
    let reader = std::thread::spawn(move || {
        for l in BufReader::new(err).lines() {
            let Ok(l) = l else { break };
            l2.lock().unwrap().push(l);
        }
    });
    let addr: SocketAddr = wait_for(10.0, "listening line", || {
        let ls = lines.lock().unwrap();
        ls.iter().find_map(|l| {
            let rest = &l[l.find("listener=")? + "listener=".len()..];
            rest.split(' ').next()?.parse().ok()
        })
    });
    wait_for(10.0, "serving line", || {
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("serving"))
            .then_some(())
    });
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"x peer=203.0.113.66:22 end=lifetime\n")
        .unwrap();
    // Reset: the record is written when the peer is gone.
    socket2::SockRef::from(&s)
        .set_linger(Some(std::time::Duration::ZERO))
        .unwrap();
    drop(s);
    let rec = wait_for(15.0, "the record", || {
        lines
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("connection released"))
            .cloned()
    });
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let st = wait_for(10.0, "exit", || child.try_wait().ok().flatten());
    assert!(st.success());
    let _ = reader.join();
    let all = lines.lock().unwrap().join("\n");
    assert!(!all.contains('\x1b'), "ANSI codes on a pipe: {all:?}");
    // Outside quoted values, exactly one peer= and one end= field: the
    // peer's text stayed inside its own.
    let bare = outside_quotes(&rec);
    assert_eq!(bare.matches(" peer=").count(), 1, "{rec}");
    assert_eq!(bare.matches(" end=").count(), 1, "{rec}");
    assert!(rec.contains(" end=peer_reset"), "{rec}");
    assert!(
        rec.contains(r#"head="x peer=203.0.113.66:22 end=lifetime\\n""#),
        "{rec}"
    );
}

/// `line` with every double-quoted value (backslash escapes honoured)
/// replaced by `""`.
fn outside_quotes(line: &str) -> String {
    let mut out = String::new();
    let mut it = line.chars();
    while let Some(c) = it.next() {
        if c != '"' {
            out.push(c);
            continue;
        }
        out.push_str("\"\"");
        while let Some(q) = it.next() {
            match q {
                '\\' => {
                    it.next();
                }
                '"' => break,
                _ => {}
            }
        }
    }
    out
}
