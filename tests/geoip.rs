//! GeoIP enrichment with MaxMind DB files: ones built here with known
//! ranges (PyPI's `mmdb-writer`, in the venv tests/run-all.sh makes), and
//! the real GeoLite2 file PyPI's `maxminddb-geolite2` ships, for realism.
//! Only lookups: no traffic leaves the machine.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};
use support::stats::TempDir;
use tarpit::engine::record::{ConnRecord, EndReason};
use tarpit::geoip::{GeoIp, Kind};
use tarpit::stats::history::{self, History, HistoryOptions};
use tarpit::stats::metrics::HistoryMetrics;

/// The Python that has `mmdb-writer` and `maxminddb-geolite2`
/// (`TARPIT_PYENV`, default `target/pyenv`), or `None` (a skip; a failure in CI).
fn python(test: &str) -> Option<PathBuf> {
    let env = std::env::var_os("TARPIT_PYENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyenv"));
    let py = env.join("bin/python3");
    let ok = Command::new(&py)
        .args(["-c", "import mmdb_writer, netaddr, geolite2"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(py);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{test}: {} lacks mmdb-writer / maxminddb-geolite2 (tests/run-all.sh installs them)",
            py.display()
        );
    }
    eprintln!("SKIP {test}: no {} with mmdb-writer", py.display());
    None
}

/// Writes an MMDB of `db_type` to `out`: `nets` are (CIDR, Python dict
/// literal of the record).
fn build(py: &Path, out: &Path, db_type: &str, nets: &[(&str, &str)]) {
    let mut script = format!(
        "from mmdb_writer import MMDBWriter, MmdbU32\nfrom netaddr import IPSet\n\
         w = MMDBWriter(ip_version=6, database_type={db_type:?}, languages=['en'], \
         description={{'en': 'tarpit test'}}, ipv4_compatible=True)\n"
    );
    for (net, rec) in nets {
        script.push_str(&format!("w.insert_network(IPSet([{net:?}]), {rec})\n"));
    }
    // Written beside, then renamed: what geoipupdate does.
    let tmp = out.with_extension("tmp");
    script.push_str(&format!("w.to_db_file({:?})\n", tmp.display().to_string()));
    let o = Command::new(py).arg("-c").arg(&script).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::rename(&tmp, out).unwrap();
}

fn country_db(py: &Path, out: &Path, first: &str) {
    build(
        py,
        out,
        "GeoLite2-Country",
        &[
            (
                "10.77.70.0/24",
                &format!("{{'country': {{'iso_code': '{first}'}}}}"),
            ),
            ("10.77.71.0/24", "{'country': {'iso_code': 'BR'}}"),
            // No country, only where the block is registered (anycast etc.).
            (
                "10.77.72.0/24",
                "{'registered_country': {'iso_code': 'NL'}}",
            ),
            ("fd77:70::/32", "{'country': {'iso_code': 'JP'}}"),
            // Junk a database could hold: never shown as a country.
            ("10.77.73.0/24", "{'country': {'iso_code': '<b>'}}"),
        ],
    );
}

fn asn_db(py: &Path, out: &Path) {
    build(
        py,
        out,
        "GeoLite2-ASN",
        &[
            (
                "10.77.70.0/24",
                "{'autonomous_system_number': MmdbU32(64500), 'autonomous_system_organization': 'Example\\x1b[31m Net'}",
            ),
            (
                "10.77.71.0/24",
                "{'autonomous_system_number': MmdbU32(64501), 'autonomous_system_organization': 'Other AS'}",
            ),
        ],
    );
}

#[test]
fn lookups_from_built_databases_and_files_that_change_or_go_bad() {
    let Some(py) = python("lookups_from_built_databases_and_files_that_change_or_go_bad") else {
        return;
    };
    let dir = TempDir::new("geoip");
    let (c, a) = (dir.path().join("country.mmdb"), dir.path().join("asn.mmdb"));
    country_db(&py, &c, "DE");
    asn_db(&py, &a);
    let mut g = GeoIp::open(&[c.clone(), a.clone()]).unwrap();
    assert_eq!(g.kinds(), vec![Kind::Country, Kind::Asn]);
    let l = |g: &GeoIp, ip: &str| g.lookup_only(ip.parse().unwrap());
    let de = l(&g, "10.77.70.5");
    assert_eq!(de.country.as_deref(), Some("DE"));
    assert_eq!(de.asn, Some(64500));
    assert_eq!(
        de.as_org.as_deref(),
        Some("Example[31m Net"),
        "control characters dropped"
    );
    // IPv4-mapped IPv6 is looked up as IPv4.
    let br = l(&g, "::ffff:10.77.71.9");
    assert_eq!((br.country.as_deref(), br.asn), (Some("BR"), Some(64501)));
    assert_eq!(l(&g, "10.77.72.1").country.as_deref(), Some("NL"));
    assert_eq!(l(&g, "fd77:70::1").country.as_deref(), Some("JP"));
    assert_eq!(l(&g, "10.77.73.1").country, None);
    assert_eq!(l(&g, "10.77.99.1"), tarpit::geoip::Geo::default());

    // geoipupdate replaces the file: the next check reads the new one.
    country_db(&py, &c, "FR");
    g.refresh_now();
    assert_eq!(l(&g, "10.77.70.5").country.as_deref(), Some("FR"));
    // It goes bad: no country (a warning), ASN still there.
    std::fs::write(&c, b"half a download").unwrap();
    g.refresh_now();
    let x = l(&g, "10.77.70.5");
    assert_eq!((x.country, x.asn), (None, Some(64500)));
    assert_eq!(g.kinds(), vec![Kind::Asn]);
    // And good again.
    country_db(&py, &c, "DE");
    g.refresh_now();
    assert_eq!(l(&g, "10.77.70.5").country.as_deref(), Some("DE"));
}

#[test]
fn missing_corrupt_or_wrong_type_files_are_errors_naming_the_file() {
    let Some(py) = python("missing_corrupt_or_wrong_type_files_are_errors_naming_the_file") else {
        return;
    };
    let dir = TempDir::new("geoipbad");
    let good = dir.path().join("country.mmdb");
    country_db(&py, &good, "DE");
    let missing = dir.path().join("GeoLite2-ASN.mmdb");
    let e = GeoIp::open(&[good.clone(), missing.clone()]).unwrap_err();
    assert_eq!(e.path, missing, "{e}");
    // Cut in half: the search tree points past the end.
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.mmdb");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = GeoIp::open(std::slice::from_ref(&cut)).unwrap_err();
    assert!(e.to_string().contains("cut.mmdb"), "{e}");
    // A valid file of another kind.
    let other = dir.path().join("anon.mmdb");
    build(
        &py,
        &other,
        "GeoIP2-Anonymous-IP",
        &[("10.77.70.0/24", "{'is_anonymous': True}")],
    );
    let e = GeoIp::open(std::slice::from_ref(&other)).unwrap_err();
    assert!(
        e.to_string().contains("anon.mmdb") && e.message.contains("neither country nor ASN"),
        "{e}"
    );
    // At the history's start too: the error names the file.
    let mut o = HistoryOptions::new(dir.path().join("h.db"), 90);
    o.geoip = vec![cut.clone()];
    let e = History::start(o, HistoryMetrics::default())
        .err()
        .expect("refused");
    assert!(e.to_string().contains("cut.mmdb"), "{e}");
}

fn rec(peer: &str, held: f64) -> ConnRecord {
    let end = SystemTime::now() - Duration::from_secs(60);
    ConnRecord {
        listener: "0.0.0.0:2222".into(),
        peer: peer.parse().unwrap(),
        local: "10.77.0.1:2222".parse().unwrap(),
        original_dst: "10.77.0.1:22".parse().unwrap(),
        start: end - Duration::from_secs_f64(held),
        held_secs: held,
        engaged_secs: held,
        engaged_upper_bound: false,
        syn_wait_secs: 0.0,
        bytes_received: 0,
        fin_after_secs: None,
        end: EndReason::Lifetime,
        head: String::new(),
        client: Default::default(),
        estimated: false,
        policy: String::new(),
    }
}

/// The history writer looks each row up once and stores the facts; the
/// report ranks countries and ASNs by attacker time wasted; the country metrics count.
#[test]
fn history_rows_carry_geo_and_report_ranks_countries_and_asns() {
    let Some(py) = python("history_rows_carry_geo_and_report_ranks_countries_and_asns") else {
        return;
    };
    let dir = TempDir::new("geoiphist");
    let (c, a) = (dir.path().join("country.mmdb"), dir.path().join("asn.mmdb"));
    country_db(&py, &c, "DE");
    asn_db(&py, &a);
    let db = dir.path().join("history.db");
    let mut o = HistoryOptions::new(db.clone(), 90);
    o.geoip = vec![c, a];
    o.country_metrics = true;
    let hm = HistoryMetrics::default();
    let h = History::start(o, hm.clone()).unwrap();
    for r in [
        rec("10.77.70.1:4000", 100.0),
        rec("10.77.70.2:4001", 50.0),
        rec("10.77.71.1:4002", 1000.0),
        rec("[fd77:70::9]:4003", 10.0),
        rec("10.77.99.9:4004", 5000.0),
    ] {
        h.record(&r);
    }
    assert!(h.flush(Duration::from_secs(10)));
    h.close(Duration::from_secs(10));

    let conn = history::open_for_reading(&db).unwrap();
    let row: (Option<String>, Option<i64>, Option<String>) = conn
        .query_row(
            "SELECT country, asn, as_org FROM connections WHERE peer_ip = '10.77.71.1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        row,
        (Some("BR".into()), Some(64501), Some("Other AS".into()))
    );
    let unknown: Option<String> = conn
        .query_row(
            "SELECT country FROM connections WHERE peer_ip = '10.77.99.9'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(unknown, None);

    let now = tarpit::engine::record::to_unix(SystemTime::now());
    let rep = tarpit::stats::report::compute(&conn, now - 86400.0, now).unwrap();
    let cs: Vec<(&str, u64, f64)> = rep
        .top_countries
        .iter()
        .map(|c| (c.country.as_str(), c.connections, c.held_secs))
        .collect();
    assert_eq!(
        cs,
        vec![("BR", 1, 1000.0), ("DE", 2, 150.0), ("JP", 1, 10.0)]
    );
    let asns: Vec<(u32, &str)> = rep
        .top_asns
        .iter()
        .map(|a| (a.asn, a.org.as_str()))
        .collect();
    assert_eq!(asns, vec![(64501, "Other AS"), (64500, "Example[31m Net")]);
    assert_eq!(rep.time_basis, "engaged");
    let text = tarpit::stats::report::render_text(&rep);
    assert!(
        text.contains("Top countries by attacker time wasted") && text.contains("AS64501"),
        "{text}"
    );
    let html = tarpit::stats::report::render_html(&rep);
    assert!(
        html.contains(r#"<tr data-country="BR">"#) && html.contains(r#"<tr data-asn="64500">"#)
    );

    let mut reg = prometheus_client::registry::Registry::with_prefix("tarpit");
    hm.register_country(&mut reg);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
    assert!(
        out.contains(r#"tarpit_connections_by_country_total{country="DE"} 2"#),
        "{out}"
    );
    assert!(
        out.contains(r#"tarpit_connections_by_country_total{country="--"} 1"#),
        "{out}"
    );
    assert!(!out.contains("10.77."), "no addresses in metrics");
}

/// The GeoLite2 file a PyPI package ships: it opens, verifies, is taken for
/// country data, and knows where well-known public resolvers are registered.
#[test]
fn real_geolite2_file_from_pypi() {
    let Some(py) = python("real_geolite2_file_from_pypi") else {
        return;
    };
    let o = Command::new(&py)
        .args(["-c", "import geolite2, os; print(os.path.join(os.path.dirname(geolite2.__file__), '_maxminddb_geolite2', 'GeoLite2-City.mmdb'))"])
        .output()
        .unwrap();
    let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    let p = std::fs::canonicalize(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let t0 = std::time::Instant::now();
    let g = GeoIp::open(std::slice::from_ref(&p)).unwrap();
    println!("opened and verified {} in {:?}", p.display(), t0.elapsed());
    assert_eq!(g.kinds(), vec![Kind::Country]);
    // Lookups only (nothing is sent anywhere): Google's and Cloudflare's resolvers.
    assert_eq!(
        g.lookup_only("8.8.8.8".parse().unwrap()).country.as_deref(),
        Some("US")
    );
    assert_eq!(
        g.lookup_only("2001:4860:4860::8888".parse().unwrap())
            .country
            .as_deref(),
        Some("US")
    );
    assert_eq!(g.lookup_only("10.77.0.1".parse().unwrap()).country, None);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real `tarpit serve` with `geoip` and `metrics_country` in `[serve]`:
/// `tarpit stats` shows the held peer's country, the history row carries
/// country and ASN, `tarpit report --json` ranks them, `/metrics` counts by
/// country; and a bad file stops the start, naming the file.
#[test]
fn serve_with_geoip_config_stats_history_report_and_metrics() {
    let Some(py) = python("serve_with_geoip_config_stats_history_report_and_metrics") else {
        return;
    };
    let dir = TempDir::new("geoipserve");
    let (c, a) = (dir.path().join("country.mmdb"), dir.path().join("asn.mmdb"));
    build(
        &py,
        &c,
        "GeoLite2-Country",
        &[("127.0.70.0/24", "{'country': {'iso_code': 'DE'}}")],
    );
    build(
        &py,
        &a,
        "GeoLite2-ASN",
        &[(
            "127.0.70.0/24",
            "{'autonomous_system_number': MmdbU32(64500), 'autonomous_system_organization': 'Example Net'}",
        )],
    );
    let db = dir.path().join("history.db");
    let sock = dir.path().join("control.sock");
    let port = free_port();
    let conf = dir.path().join("tarpit.toml");
    std::fs::write(
        &conf,
        format!(
            "[serve]\nlisten = [\"127.0.0.1:0\"]\nlifetime_min = \"3s\"\nlifetime_max = \"3s\"\n\
             history = {:?}\ncontrol = {:?}\nmetrics = \"127.0.0.1:{port}\"\n\
             geoip = [{:?}, {:?}]\nmetrics_country = true\n",
            db.display().to_string(),
            sock.display().to_string(),
            c.display().to_string(),
            a.display().to_string()
        ),
    )
    .unwrap();
    let mut c_ = Command::new(support::bin());
    c_.args(["--log-format", "json", "--config"])
        .arg(&conf)
        .arg("serve");
    let mut serve = support::serve::Proc::spawn(c_);
    let to = serve.addr();
    // From 127.0.70.5: bind the source address first.
    let sock2 = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock2
        .bind(
            &"127.0.70.5:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    sock2.connect(&to.into()).unwrap();
    let stats = support::wait_for(10.0, "stats with a DE row", || {
        let o = Command::new(support::bin())
            .arg("--config")
            .arg(&conf)
            .arg("stats")
            .output()
            .unwrap();
        let t = String::from_utf8_lossy(&o.stdout).into_owned();
        t.lines()
            .any(|l| l.starts_with("127.0.70.5:") && l.trim_end().ends_with(" DE"))
            .then_some(t)
    });
    assert!(
        stats.lines().next().unwrap().trim_end().ends_with("CC"),
        "{stats}"
    );
    let o = Command::new(support::bin())
        .arg("--config")
        .arg(&conf)
        .args(["stats", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["conns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["country"] == "DE"),
        "{v}"
    );
    // Lifetime over: the row is written with its GeoIP facts.
    serve.wait_records(1, 15.0);
    drop(sock2);
    let scrape = || {
        use std::io::{Read, Write};
        let mut t = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        t.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        let _ = t.read_to_string(&mut out);
        out
    };
    let m = support::wait_for(10.0, "the country metric", || {
        let m = scrape();
        m.contains(r#"tarpit_connections_by_country_total{country="DE"} 1"#)
            .then_some(m)
    });
    assert!(
        m.contains(r#"tarpit_attacker_time_by_country_seconds_total{country="DE"} 3"#),
        "{m}"
    );
    assert!(!m.contains("127.0.70.5"), "no addresses in metrics");
    assert_eq!(serve.term(10.0).code(), Some(0));
    let conn = history::open_for_reading(&db).unwrap();
    let row: (String, i64, String) = conn
        .query_row(
            "SELECT country, asn, as_org FROM connections WHERE peer_ip = '127.0.70.5'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(row, ("DE".into(), 64500, "Example Net".into()));
    let o = Command::new(support::bin())
        .args(["report", "--history"])
        .arg(&db)
        .arg("--json")
        .output()
        .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["top_countries"][0]["country"], "DE", "{r}");
    assert_eq!(r["top_asns"][0]["asn"], 64500, "{r}");
    assert_eq!(r["time_basis"], "engaged");
    assert!(
        serve
            .json()
            .iter()
            .any(|v| v["message"] == "GeoIP database loaded"),
        "serve logged the loaded databases"
    );

    // A file that is not a database: serve refuses to start, naming it.
    std::fs::write(&a, b"not a database").unwrap();
    let o = Command::new(support::bin())
        .arg("--config")
        .arg(&conf)
        .arg("serve")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains(&a.display().to_string()), "{err}");
}
