//! `tarpit serve --takeover`: a restart that keeps every trapped attacker.

mod support;

use socket2::{Domain, SockAddr, Socket, Type};
use std::io::{ErrorKind, Read};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use support::serve::Proc;
use support::wait_for;

const N: usize = 1000;

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tarpit-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Opens `n` connections from 127.0.5.x (20 per source address); every
/// tenth one half-closes (FIN). Returns them with their connect times.
fn clients(addr: SocketAddr, n: usize) -> Vec<(TcpStream, SystemTime)> {
    (0..n)
        .map(|i| {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            let src: SocketAddr = format!("127.0.{}.{}:0", 5 + i / 5000, 1 + (i / 20) % 250)
                .parse()
                .unwrap();
            s.bind(&SockAddr::from(src)).unwrap();
            s.connect(&SockAddr::from(addr)).unwrap();
            let t = SystemTime::now();
            let s: TcpStream = s.into();
            if i % 10 == 0 {
                s.shutdown(Shutdown::Write).unwrap();
            }
            (s, t)
        })
        .collect()
}

/// No FIN, no RST, no data: the read would block.
fn untouched(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 8];
    matches!(s.read(&mut b), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

#[test]
fn takeover_keeps_every_connection_and_its_start_time() {
    let dir = tmpdir("takeover");
    let ctl = dir.join("control.sock");
    let ctl_s = ctl.to_str().unwrap();
    let mut old = Proc::serve(&["--listen", "127.0.0.1:0", "--control", ctl_s]);
    let addr = old.addr();
    let base = fd_count(old.child.id());
    let mut cs = clients(addr, N);
    wait_for(20.0, "old holds all", || {
        (fd_count(old.child.id()) >= base + N).then_some(())
    });

    let mut new = Proc::serve(&["--listen", "127.0.0.1:1", "--control", ctl_s, "--takeover"]);
    let st = wait_for(15.0, "old process exits", || {
        old.child.try_wait().ok().flatten()
    });
    assert!(st.success(), "old exit status {st}");
    old.drain();
    assert!(old.records().is_empty(), "the old process released nothing");
    assert_eq!(new.addr(), addr, "the listener itself was handed over");
    let took: Vec<_> = new
        .json()
        .into_iter()
        .filter(|v| v["message"] == "took over listeners and connections")
        .collect();
    assert_eq!(took[0]["conns"], N);

    std::thread::sleep(Duration::from_millis(500));
    let touched = cs
        .iter_mut()
        .map(|c| !untouched(&mut c.0))
        .filter(|t| *t)
        .count();
    assert_eq!(
        touched, 0,
        "clients saw FIN, RST or data during the takeover"
    );

    // The new process accepts on the inherited listener.
    let late = TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));

    assert!(new.term(5.0).success());
    let recs = new.records();
    assert_eq!(recs.len(), N + 1);
    let mut fins = 0;
    for (i, (s, t)) in cs.iter().enumerate() {
        let me = s.local_addr().unwrap().to_string();
        let r = recs
            .iter()
            .find(|r| r["peer"] == me)
            .unwrap_or_else(|| panic!("no record for {me}"));
        assert_eq!(r["end"], "shutdown");
        let start = humantime::parse_rfc3339(r["start"].as_str().unwrap()).unwrap();
        let diff = if start > *t {
            start.duration_since(*t)
        } else {
            t.duration_since(start)
        }
        .unwrap();
        assert!(
            diff < Duration::from_millis(500),
            "start time moved by {diff:?}"
        );
        if i % 10 == 0 {
            assert_eq!(r["peer_tried_close"], true, "FIN fact carried over");
            fins += 1;
        }
    }
    assert_eq!(fins, N / 10);
    assert!(recs
        .iter()
        .any(|r| r["peer"] == late.local_addr().unwrap().to_string()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn failed_takeover_leaves_the_old_process_holding_everything() {
    let dir = tmpdir("takeover-fail");
    let ctl = dir.join("control.sock");
    let ctl_s = ctl.to_str().unwrap();
    let mut old = Proc::serve(&["--listen", "127.0.0.1:0", "--control", ctl_s]);
    let addr = old.addr();
    let base = fd_count(old.child.id());
    let mut cs = clients(addr, 200);
    wait_for(10.0, "old holds all", || {
        (fd_count(old.child.id()) >= base + 200).then_some(())
    });

    // A new process that receives everything and dies before confirming.
    // The only socket the old process hands over to: the requester's own,
    // `<control>.takeover.<pid>`.
    let side = dir.join(format!("control.sock.takeover.{}", std::process::id()));
    let rx = tarpit::engine::socket::handover::Receiver::bind(&side).unwrap();
    let mut req = tarpit::control::Request::new("takeover");
    req.args
        .insert("socket".into(), side.to_str().unwrap().into());
    let ctl2 = ctl.clone();
    let asker =
        std::thread::spawn(move || tarpit::control::request(&ctl2, &req, Duration::from_secs(20)));
    let inh = rx.receive(Duration::from_secs(10)).unwrap();
    assert_eq!(inh.conns.len(), 200);
    drop(inh); // closes our duplicates, never confirms
    drop(rx);
    assert!(
        asker.join().unwrap().is_err(),
        "the old process reports the failed takeover"
    );

    std::thread::sleep(Duration::from_millis(500));
    assert!(
        old.child.try_wait().unwrap().is_none(),
        "old process still running"
    );
    let touched = cs
        .iter_mut()
        .map(|c| !untouched(&mut c.0))
        .filter(|t| *t)
        .count();
    assert_eq!(touched, 0);
    let late = TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(old.term(5.0).success());
    let recs = old.records();
    assert_eq!(recs.len(), 201, "everything still held by the old process");
    assert!(recs.iter().all(|r| r["end"] == "shutdown"));
    drop(late);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn takeover_with_nobody_running_starts_fresh() {
    let dir = tmpdir("takeover-fresh");
    let ctl = dir.join("control.sock");
    let p = Proc::serve(&[
        "--listen",
        "127.0.0.1:0",
        "--control",
        ctl.to_str().unwrap(),
        "--takeover",
    ]);
    assert!(p
        .json()
        .iter()
        .any(|v| v["message"] == "no running tarpit serve to take over; starting fresh"));
    let mut c = TcpStream::connect(p.addr()).unwrap();
    assert!(untouched(&mut c));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigusr2_starts_a_successor_that_takes_everything_over() {
    let dir = tmpdir("takeover-usr2");
    let ctl = dir.join("control.sock");
    let mut old = Proc::serve(&[
        "--listen",
        "127.0.0.1:0",
        "--control",
        ctl.to_str().unwrap(),
    ]);
    let addr = old.addr();
    let old_pid = old.child.id();
    let base = fd_count(old_pid);
    let mut cs = clients(addr, 300);
    wait_for(10.0, "old holds all", || {
        (fd_count(old_pid) >= base + 300).then_some(())
    });
    old.signal("USR2");
    // The successor writes to the same stderr; its "serving" line names it.
    let new_pid = wait_for(15.0, "successor serving", || {
        old.json()
            .iter()
            .filter(|v| v["message"] == "serving")
            .filter_map(|v| v["pid"].as_u64())
            .find(|&p| p != u64::from(old_pid))
    });
    struct Kill(u64);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &self.0.to_string()])
                .status();
        }
    }
    let guard = Kill(new_pid);
    let st = wait_for(15.0, "old exits", || old.child.try_wait().ok().flatten());
    assert!(st.success());
    std::thread::sleep(Duration::from_millis(300));
    let touched = cs
        .iter_mut()
        .map(|c| !untouched(&mut c.0))
        .filter(|t| *t)
        .count();
    assert_eq!(touched, 0, "clients saw FIN, RST or data");
    assert!(fd_count(new_pid as u32) >= 300, "the successor holds them");
    std::process::Command::new("kill")
        .args(["-TERM", &new_pid.to_string()])
        .status()
        .unwrap();
    wait_for(5.0, "successor exits", || {
        (!std::path::Path::new(&format!("/proc/{new_pid}")).exists()).then_some(())
    });
    old.drain();
    let recs = old.records();
    assert_eq!(
        recs.len(),
        300,
        "the successor released all 300 with records"
    );
    drop(guard);
    let _ = std::fs::remove_dir_all(&dir);
}
