//! `tarpit serve` under systemd's protocols, driven exactly the way systemd
//! drives it: a launcher binds the listeners, moves them to descriptors 3..,
//! sets LISTEN_FDS and LISTEN_PID (its own pid, which exec keeps) and execs
//! the binary; NOTIFY_SOCKET names a datagram socket the test reads, where
//! READY=1 and the STATUS= lines arrive.

mod support;

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use support::serve::Proc;
use support::{bin, wait_for};

/// Binds the sockets systemd would (one with ReceiveBuffer=1, one without),
/// writes their ports to a file, hands them over as fds 3 and 4, execs.
const LAUNCHER: &str = r#"
import fcntl, os, socket, sys
portfile, kind, pid_mode = sys.argv[1], sys.argv[2], sys.argv[3]
argv = sys.argv[4:]
socks = []
if kind == "tcp":
    a = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)   # ReceiveBuffer=1
    a.bind(("127.0.0.1", 0)); a.listen(64)
    b = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    b.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # forgotten ReceiveBuffer=
    b.bind(("::1", 0)); b.listen(64)
    socks = [a, b]
else:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    socks = [u]
with open(portfile, "w") as f:
    f.write(" ".join(str(s.getsockname()[1]) for s in socks))
high = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD, 20) for s in socks]
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i, inheritable=True)
    os.close(fd)
os.environ["LISTEN_FDS"] = str(len(socks))
os.environ["LISTEN_PID"] = str(os.getpid() if pid_mode == "self" else 1)
os.execv(argv[0], argv)
"#;

fn python() -> Option<&'static str> {
    ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tarpit-act-{name}-{}", std::process::id()))
}

fn launcher(kind: &str, pid_mode: &str, portfile: &PathBuf, args: &[&str]) -> Option<Command> {
    let Some(py) = python() else {
        assert!(std::env::var_os("CI").is_none(), "python3 missing in CI");
        eprintln!("SKIP: no python3 to play systemd's part");
        return None;
    };
    let mut c = Command::new(py);
    c.arg("-c")
        .arg(LAUNCHER)
        .arg(portfile)
        .arg(kind)
        .arg(pid_mode)
        .arg(bin())
        .args([
            "--log-format",
            "json",
            "serve",
            "--history",
            "off",
            "--control",
            "off",
        ])
        .args(args);
    Some(c)
}

fn ports(portfile: &PathBuf) -> Vec<u16> {
    wait_for(5.0, "launcher port file", || {
        let s = std::fs::read_to_string(portfile).ok()?;
        let p: Vec<u16> = s
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        (!p.is_empty()).then_some(p)
    })
}

/// Reads notifications until one satisfies `pred`.
fn await_notify(sock: &UnixDatagram, secs: f64, pred: impl Fn(&str) -> bool) -> String {
    let mut seen = Vec::new();
    wait_for(secs, "notification", || {
        let mut buf = [0u8; 4096];
        match sock.recv(&mut buf) {
            Ok(n) => {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                seen.push(m.clone());
                pred(&m).then_some(m)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
            Err(e) => panic!("notify socket: {e} (seen {seen:?})"),
        }
    })
}

/// Fills the connection until the peer's window closes; returns the bytes
/// the kernel took (our small send buffer plus the tarpit's window), and
/// the connection: closed, its FIN would be stuck behind the window and an
/// exit probe would find it gone.
fn bytes_until_window_closes(addr: SocketAddr) -> (usize, TcpStream) {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    s.set_send_buffer_size(4096).unwrap();
    s.connect(&addr.into()).unwrap();
    let mut s: TcpStream = s.into();
    s.set_nonblocking(true).unwrap();
    let chunk = [0x41u8; 1024];
    let mut total = 0;
    let mut idle = 0;
    // Bounded: at most 2 MiB or ~2 s without progress.
    while total < 2 << 20 && idle < 100 {
        match s.write(&chunk) {
            Ok(n) => {
                total += n;
                idle = 0;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                idle += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    (total, s)
}

#[test]
fn socket_activated_serve_takes_checks_and_labels_listeners_and_notifies() {
    let portfile = tmp("ports");
    let _ = std::fs::remove_file(&portfile);
    let Some(mut c) = launcher("tcp", "self", &portfile, &["--listen", "127.0.0.1:1"]) else {
        return;
    };
    let notify_path = tmp("notify");
    let _ = std::fs::remove_file(&notify_path);
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    c.env("NOTIFY_SOCKET", &notify_path);
    let p = Proc::spawn(c);
    let ports = ports(&portfile);
    let v4: SocketAddr = format!("127.0.0.1:{}", ports[0]).parse().unwrap();
    let v6: SocketAddr = format!("[::1]:{}", ports[1]).parse().unwrap();

    // It serves on the passed sockets, labelled by their addresses, not on
    // the --listen address it was given.
    let mut labels = p.listeners.clone();
    labels.sort();
    assert_eq!(labels, vec![v4, v6], "{:?}", p.json());
    let logs = p.json();
    let rcv: Vec<u64> = logs
        .iter()
        .filter(|v| v["message"] == "listening")
        .filter_map(|v| v["rcvbuf"].as_u64())
        .collect();
    assert_eq!(rcv.len(), 2);
    assert!(rcv.iter().all(|&r| r <= 8192), "receive buffers {rcv:?}");
    assert!(
        logs.iter().any(|v| v["level"] == "WARN"
            && v["listener"] == v6.to_string()
            && v["message"]
                .as_str()
                .is_some_and(|m| m.contains("large receive buffer"))),
        "no warning for the 1 MiB buffer: {logs:?}"
    );

    let ready = await_notify(&notify, 10.0, |m| m.contains("READY=1"));
    assert!(ready.contains("STATUS=holding 0 connections"), "{ready}");

    // Both listeners trap with the small window: the lowered one too.
    let mut held = Vec::new();
    for a in [v4, v6] {
        let (took, conn) = bytes_until_window_closes(a);
        assert!(
            took < 32 * 1024,
            "{a}: the window stayed open for {took} bytes"
        );
        held.push(conn);
    }
    // Keep one more open so the count is observable.
    let _keep = TcpStream::connect(v4).unwrap();
    let status = await_notify(&notify, 20.0, |m| {
        m.contains("STATUS=holding 3 connections")
    });
    assert!(!status.contains("READY=1"), "{status}");

    drop(p);
    let _ = std::fs::remove_file(&notify_path);
    let _ = std::fs::remove_file(&portfile);
}

#[test]
fn fds_meant_for_another_process_are_left_alone() {
    // LISTEN_PID names pid 1: these descriptors are not ours (sd_listen_fds
    // semantics), so serve binds what it was told to.
    let portfile = tmp("otherpid");
    let _ = std::fs::remove_file(&portfile);
    let Some(c) = launcher("tcp", "other", &portfile, &["--listen", "127.0.0.1:0"]) else {
        return;
    };
    let p = Proc::spawn(c);
    let ports = ports(&portfile);
    assert_eq!(p.listeners.len(), 1);
    assert!(!ports.contains(&p.addr().port()), "{:?}", p.listeners);
    let _ = std::fs::remove_file(&portfile);
}

#[test]
fn a_passed_udp_socket_is_refused_with_a_clear_error() {
    let portfile = tmp("udp");
    let _ = std::fs::remove_file(&portfile);
    let Some(mut c) = launcher("udp", "self", &portfile, &[]) else {
        return;
    };
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("socket activation: descriptor 3"),
        "unclear error: {err}"
    );
    let _ = std::fs::remove_file(&portfile);
}
