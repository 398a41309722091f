//! Running `tarpit serve` for tests: as a real process (`Proc`) or in-process
//! (`InProc`, for live snapshots).
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{bin, wait_for};
use tarpit::engine::record::ConnRecord;
use tarpit::engine::socket::{BoundListener, Handle, ServeOptions, Server};
use tarpit::engine::{Observer, Snapshot, Totals};

/// A `tarpit` child process whose stderr (JSON logs) is collected.
pub struct Proc {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
    /// Cleared by [`Proc::forget_lines`]: later lines are read and dropped.
    keep: Arc<AtomicBool>,
    pub listeners: Vec<SocketAddr>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Proc {
    /// `tarpit --log-format json serve ARGS...`, waiting until it serves.
    /// Unless the test names them, the control socket and the history are
    /// off, so tests never share the machine's default paths.
    pub fn serve(args: &[&str]) -> Proc {
        let mut c = Command::new(bin());
        c.args(["--log-format", "json", "serve"]).args(args);
        if !args.contains(&"--control") {
            c.args(["--control", "off"]);
        }
        if !args.contains(&"--history") {
            c.args(["--history", "off"]);
        }
        Proc::spawn(c)
    }

    /// The collected log lines, for failure messages.
    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    pub fn spawn(mut c: Command) -> Proc {
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn tarpit");
        let err = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::new(AtomicBool::new(true));
        let (l2, k2) = (lines.clone(), keep.clone());
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if k2.load(Ordering::Relaxed) {
                    l2.lock().unwrap().push(line);
                }
            }
        });
        let mut p = Proc {
            child,
            lines,
            keep,
            listeners: vec![],
            reader: Some(reader),
        };
        wait_for(10.0, "serving line", || {
            if let Ok(Some(st)) = p.child.try_wait() {
                panic!("tarpit exited early ({st}): {:?}", p.lines.lock().unwrap());
            }
            p.json()
                .iter()
                .any(|v| v["message"] == "serving")
                .then_some(())
        });
        p.listeners = p
            .json()
            .iter()
            .filter(|v| v["message"] == "listening")
            .filter_map(|v| v["listener"].as_str()?.parse().ok())
            .collect();
        p
    }

    pub fn addr(&self) -> SocketAddr {
        self.listeners[0]
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops collecting log lines (they are still read, so the server never
    /// blocks on a full pipe): for benchmarks, whose servers log a line per
    /// connection.
    pub fn forget_lines(&self) {
        self.keep.store(false, Ordering::Relaxed);
        self.lines.lock().unwrap().clear();
    }

    pub fn json(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn records(&self) -> Vec<Value> {
        self.json()
            .into_iter()
            .filter(|v| v["target"] == "tarpit::record")
            .collect()
    }

    /// Waits until at least `n` records exist.
    pub fn wait_records(&self, n: usize, secs: f64) -> Vec<Value> {
        wait_for(secs, &format!("{n} records"), || {
            let r = self.records();
            (r.len() >= n).then_some(r)
        })
    }

    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(st.success());
    }

    /// SIGTERM, then waits (at most `secs`) for the exit status.
    pub fn term(&mut self, secs: f64) -> ExitStatus {
        self.signal("TERM");
        let child = &mut self.child;
        let st = wait_for(secs, "exit after SIGTERM", || {
            child.try_wait().ok().flatten()
        });
        self.drain();
        st
    }

    /// After the process exited: waits until every line it wrote is read.
    pub fn drain(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Records every ended connection.
#[derive(Default, Clone)]
pub struct Collect(pub Arc<Mutex<Vec<ConnRecord>>>);

impl Observer for Collect {
    fn ended(&self, r: &ConnRecord) {
        self.0.lock().unwrap().push(r.clone());
    }
}

/// A server running on its own thread and runtime inside the test process.
pub struct InProc {
    pub handle: Handle,
    pub listeners: Vec<SocketAddr>,
    pub records: Collect,
    thread: Option<std::thread::JoinHandle<Totals>>,
}

impl InProc {
    pub fn start(opts: ServeOptions) -> InProc {
        let bound = tarpit::engine::socket::bind_all(&opts).expect("bind");
        InProc::with_listeners(opts, bound, 100_000)
    }

    pub fn with_listeners(opts: ServeOptions, bound: Vec<BoundListener>, max: usize) -> InProc {
        let max = opts.max_conns.unwrap_or(max);
        let labels: Vec<SocketAddr> = bound.iter().map(|b| b.label.parse().unwrap()).collect();
        let records = Collect::default();
        let obs = records.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let s = Server::new(opts, bound, vec![Arc::new(obs)], max).unwrap();
                tx.send(s.handle()).unwrap();
                s.run().await
            })
        });
        let handle = rx.recv().unwrap();
        InProc {
            handle,
            listeners: labels,
            records,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.listeners[0]
    }

    pub fn snapshot(&self) -> Snapshot {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(self.handle.snapshot()).expect("server running")
    }

    pub fn records(&self) -> Vec<ConnRecord> {
        self.records.0.lock().unwrap().clone()
    }

    pub fn wait_records(&self, n: usize, secs: f64) -> Vec<ConnRecord> {
        wait_for(secs, &format!("{n} records"), || {
            let r = self.records();
            (r.len() >= n).then_some(r)
        })
    }

    pub fn stop(mut self) -> Totals {
        self.handle.shutdown();
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for InProc {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Options for tests: loopback, short ranges.
pub fn opts(listen: &str) -> ServeOptions {
    ServeOptions {
        listen: vec![listen.parse().unwrap()],
        lifetime: (Duration::from_secs(600), Duration::from_secs(600)),
        keepalive: (Duration::from_secs(60), Duration::from_secs(240)),
        ..ServeOptions::default()
    }
}
