//! Reading `nft -j list table inet NAME`: the elements of our sets with their
//! remaining time, and whether the table still has everything we put there.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use serde_json::Value;

use super::batch::chain_of;
use super::target::{mask_v6, v6_mask, Target};
use super::{FwError, Listing, NftConfig, TrapMode};

/// The objects (`{"table": ..}`, `{"set": ..}`, ...) of an nft JSON document.
fn objects(text: &str) -> Result<Vec<Value>, FwError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| FwError::Parse(format!("nft printed invalid JSON: {e}")))?;
    match v.get("nftables") {
        Some(Value::Array(a)) => Ok(a.clone()),
        _ => Err(FwError::Parse(
            "nft JSON output has no \"nftables\" array".into(),
        )),
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The set object named `name` in our table, if listed.
fn find_set<'a>(objs: &'a [Value], cfg: &NftConfig, name: &str) -> Option<&'a Value> {
    objs.iter().filter_map(|o| o.get("set")).find(|s| {
        str_of(s, "family") == Some("inet")
            && str_of(s, "table") == Some(cfg.family_table.as_str())
            && str_of(s, "name") == Some(name)
    })
}

/// Seconds as nft prints them (integer, or fractional in some versions).
fn secs(v: Option<&Value>) -> Option<Duration> {
    let v = v?;
    if let Some(n) = v.as_u64() {
        return Some(Duration::from_secs(n));
    }
    v.as_f64()
        .filter(|f| f.is_finite() && *f >= 0.0)
        .map(Duration::from_secs_f64)
}

/// One element value: `"10.0.0.1"`, `"2001:db8::"`, or (if someone made the
/// set an interval set by hand) `{"prefix": {"addr": .., "len": ..}}`.
fn target_of(val: &Value, v6: bool, v6_prefix: u8) -> Option<Target> {
    if let Some(s) = val.as_str() {
        let ip: IpAddr = s.parse().ok()?;
        return match (ip, v6) {
            (IpAddr::V4(a), false) => Some(Target::V4(a)),
            // A network address is a per-network ban. An address with host
            // bits set was put there by something else (it matches no
            // packet under the masked rule); report it as what it is.
            (IpAddr::V6(a), true) if mask_v6(a, v6_prefix) == a => {
                Some(Target::V6Net(a, v6_prefix))
            }
            (IpAddr::V6(a), true) => Some(Target::V6Net(a, 128)),
            _ => None,
        };
    }
    let p = val.get("prefix")?;
    let addr: Ipv6Addr = str_of(p, "addr")?.parse().ok()?;
    let len = u8::try_from(p.get("len")?.as_u64()?).ok()?;
    v6.then(|| Target::from_ip(IpAddr::V6(addr), len))
}

/// Elements of both sets with their remaining time (`None`: no timeout).
/// Values we cannot map to a target (ranges, foreign types) are skipped and
/// counted in the second return value.
pub fn elements(text: &str, cfg: &NftConfig) -> Result<(Listing, usize), FwError> {
    let objs = objects(text)?;
    let mut out = Vec::new();
    let mut skipped = 0;
    for (name, v6) in [(&cfg.set4, false), (&cfg.set6, true)] {
        let Some(set) = find_set(&objs, cfg, name) else {
            continue; // a missing set holds nothing
        };
        let Some(elems) = set.get("elem").and_then(Value::as_array) else {
            continue; // an empty set has no "elem" key
        };
        for e in elems {
            let (val, expires) = match e.get("elem") {
                Some(inner) => (inner.get("val"), secs(inner.get("expires"))),
                None => (Some(e), None),
            };
            match val.and_then(|v| target_of(v, v6, cfg.v6_prefix)) {
                Some(t) => out.push((t, expires)),
                None => skipped += 1,
            }
        }
    }
    Ok((out, skipped))
}

/// What of our ruleset is missing; empty means intact.
pub fn missing_parts(text: &str, cfg: &NftConfig) -> Result<Vec<String>, FwError> {
    let objs = objects(text)?;
    let t = &cfg.family_table;
    let mut missing = Vec::new();
    let has_table = objs
        .iter()
        .filter_map(|o| o.get("table"))
        .any(|x| str_of(x, "family") == Some("inet") && str_of(x, "name") == Some(t.as_str()));
    if !has_table {
        missing.push(format!("table inet {t}"));
        return Ok(missing);
    }
    for (name, ty) in [(&cfg.set4, "ipv4_addr"), (&cfg.set6, "ipv6_addr")] {
        let ok = find_set(&objs, cfg, name).is_some_and(|s| {
            str_of(s, "type") == Some(ty)
                && s.get("flags")
                    .and_then(Value::as_array)
                    .is_some_and(|f| f.iter().any(|x| x.as_str() == Some("timeout")))
        });
        if !ok {
            missing.push(format!("set inet {t} {name} (type {ty}, flags timeout)"));
        }
    }
    let chain = chain_of(cfg);
    let (chain_type, action_text) = match cfg.mode {
        TrapMode::Redirect => ("nat", format!("redirect to :{}", cfg.port)),
        TrapMode::Stateless { group } => ("filter", crate::firewall::stateless::log_drop(group)),
    };
    let chain_ok = objs.iter().filter_map(|o| o.get("chain")).any(|c| {
        str_of(c, "family") == Some("inet")
            && str_of(c, "table") == Some(t.as_str())
            && str_of(c, "name") == Some(chain)
            && str_of(c, "type") == Some(chain_type)
            && str_of(c, "hook") == Some("prerouting")
    });
    if !chain_ok {
        missing.push(format!(
            "chain inet {t} {chain} ({chain_type} prerouting hook)"
        ));
    }
    if super::batch::guards(cfg) {
        let guard_ok = objs.iter().filter_map(|o| o.get("chain")).any(|c| {
            str_of(c, "family") == Some("inet")
                && str_of(c, "table") == Some(t.as_str())
                && str_of(c, "name") == Some(super::GUARD_CHAIN)
                && str_of(c, "hook") == Some("prerouting")
        });
        if !guard_ok {
            missing.push(format!(
                "chain inet {t} {} (filter prerouting hook)",
                super::GUARD_CHAIN
            ));
        }
    }
    let rules: Vec<&Value> = objs
        .iter()
        .filter_map(|o| o.get("rule"))
        .filter(|r| {
            str_of(r, "family") == Some("inet")
                && str_of(r, "table") == Some(t.as_str())
                && str_of(r, "chain") == Some(chain)
        })
        .collect();
    // Does a rule's statement list end in our treatment of trapped packets?
    let acts = |expr: &[Value]| match cfg.mode {
        TrapMode::Redirect => expr
            .iter()
            .filter_map(|e| e.get("redirect"))
            .any(|r| r.get("port").and_then(Value::as_u64) == Some(u64::from(cfg.port))),
        TrapMode::Stateless { group } => {
            expr.iter()
                .filter_map(|e| e.get("log"))
                .any(|l| l.get("group").and_then(Value::as_u64) == Some(u64::from(group)))
                && expr.iter().any(|e| e.get("drop").is_some())
        }
    };
    let v6_want_mask = (cfg.v6_prefix < 128).then(|| v6_mask(cfg.v6_prefix));
    let has_rule = |proto: &str, set: &str, mask: Option<Ipv6Addr>| {
        rules.iter().any(|r| {
            let Some(expr) = r.get("expr").and_then(Value::as_array) else {
                return false;
            };
            let want_right = format!("@{set}");
            let matches_set = expr.iter().filter_map(|e| e.get("match")).any(|m| {
                str_of(m, "right") == Some(want_right.as_str())
                    && m.get("left").is_some_and(|l| saddr_left(l, proto, mask))
            });
            matches_set && acts(expr)
        })
    };
    if !has_rule("ip", &cfg.set4, None) {
        missing.push(format!("rule: ip saddr @{} {action_text}", cfg.set4));
    }
    if !has_rule("ip6", &cfg.set6, v6_want_mask) {
        missing.push(format!(
            "rule: ip6 saddr{} @{} {action_text}",
            v6_want_mask.map(|m| format!(" & {m}")).unwrap_or_default(),
            cfg.set6,
        ));
    }
    if cfg.range_sets {
        let (n4, n6) = super::net::set_names(cfg);
        for (name, ty, proto) in [(&n4, "ipv4_addr", "ip"), (&n6, "ipv6_addr", "ip6")] {
            let ok = find_set(&objs, cfg, name).is_some_and(|s| {
                str_of(s, "type") == Some(ty)
                    && s.get("flags").and_then(Value::as_array).is_some_and(|f| {
                        ["interval", "timeout"]
                            .iter()
                            .all(|w| f.iter().any(|x| x.as_str() == Some(w)))
                    })
            });
            if !ok {
                missing.push(format!(
                    "set inet {t} {name} (type {ty}, flags interval, timeout)"
                ));
            }
            if !has_rule(proto, name, None) {
                missing.push(format!("rule: {proto} saddr @{name} {action_text}"));
            }
        }
    }
    Ok(missing)
}

/// Is `left` the packet's `proto` source address, masked by `mask` if given?
fn saddr_left(left: &Value, proto: &str, mask: Option<Ipv6Addr>) -> bool {
    let is_saddr = |p: &Value| {
        p.get("payload").is_some_and(|pl| {
            str_of(pl, "protocol") == Some(proto) && str_of(pl, "field") == Some("saddr")
        })
    };
    match mask {
        None => is_saddr(left),
        Some(m) => left.get("&").and_then(Value::as_array).is_some_and(|a| {
            a.len() == 2
                && is_saddr(&a[0])
                && a[1].as_str().and_then(|s| s.parse::<Ipv6Addr>().ok()) == Some(m)
        }),
    }
}

/// Names of the `kind` objects (`"chain"`, `"set"`) in our table, as a
/// listing shows them.
pub fn names_in_table(text: &str, cfg: &NftConfig, kind: &str) -> Result<Vec<String>, FwError> {
    let t = cfg.family_table.as_str();
    Ok(objects(text)?
        .iter()
        .filter_map(|o| o.get(kind))
        .filter(|x| str_of(x, "family") == Some("inet") && str_of(x, "table") == Some(t))
        .filter_map(|x| str_of(x, "name").map(String::from))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from nft 1.0.6 after `ensure` and two bans.
    const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
 {"table": {"family": "inet", "name": "tarpit", "handle": 1}},
 {"set": {"family": "inet", "name": "trap4", "table": "tarpit", "type": "ipv4_addr", "handle": 1, "flags": ["timeout"],
   "elem": [{"elem": {"val": "10.77.0.1", "timeout": 3600, "expires": 3599}}, "10.77.0.3", {"elem": {"val": "10.77.0.2", "timeout": 60, "expires": 59.5}}]}},
 {"set": {"family": "inet", "name": "trap6", "table": "tarpit", "type": "ipv6_addr", "handle": 2, "flags": ["timeout"],
   "elem": [{"elem": {"val": "2001:db8:1::", "timeout": 3601, "expires": 3600}}, {"elem": {"val": "2001:db8:2::5", "timeout": 9, "expires": 8}}, {"elem": {"val": {"range": ["2001:db8::", "2001:db8::9"]}, "timeout": 5, "expires": 4}}]}},
 {"chain": {"family": "inet", "table": "tarpit", "name": "prerouting", "handle": 3, "type": "nat", "hook": "prerouting", "prio": -110, "policy": "accept"}},
 {"rule": {"family": "inet", "table": "tarpit", "chain": "prerouting", "handle": 4, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@trap4"}}, {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}, {"redirect": {"port": 2222}}]}},
 {"rule": {"family": "inet", "table": "tarpit", "chain": "prerouting", "handle": 5, "expr": [{"match": {"op": "==", "left": {"&": [{"payload": {"protocol": "ip6", "field": "saddr"}}, "ffff:ffff:ffff:ffff::"]}, "right": "@trap6"}}, {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}, {"redirect": {"port": 2222}}]}}]}"#;

    #[test]
    fn elements_with_remaining_time() {
        let (els, skipped) = elements(LISTING, &NftConfig::default()).unwrap();
        assert_eq!(skipped, 1, "the range element cannot be a target");
        assert_eq!(
            els,
            vec![
                (
                    Target::V4("10.77.0.1".parse().unwrap()),
                    Some(Duration::from_secs(3599))
                ),
                (Target::V4("10.77.0.3".parse().unwrap()), None),
                (
                    Target::V4("10.77.0.2".parse().unwrap()),
                    Some(Duration::from_millis(59500))
                ),
                (
                    Target::V6Net("2001:db8:1::".parse().unwrap(), 64),
                    Some(Duration::from_secs(3600))
                ),
                (
                    Target::V6Net("2001:db8:2::5".parse().unwrap(), 128),
                    Some(Duration::from_secs(8))
                ),
            ]
        );
    }

    #[test]
    fn complete_listing_is_intact() {
        assert!(missing_parts(LISTING, &NftConfig::default())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn changed_port_or_prefix_is_not_intact() {
        let c = NftConfig {
            port: 2223,
            ..NftConfig::default()
        };
        assert_eq!(missing_parts(LISTING, &c).unwrap().len(), 2);
        let c = NftConfig {
            v6_prefix: 56,
            ..NftConfig::default()
        };
        let m = missing_parts(LISTING, &c).unwrap();
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].contains("ffff:ffff:ffff:ff00::"), "{m:?}");
    }

    #[test]
    fn missing_rules_and_sets_are_named() {
        let no_rules: String = LISTING
            .lines()
            .filter(|l| !l.contains("\"rule\""))
            .collect::<Vec<_>>()
            .join("\n")
            .trim_end_matches(',')
            .to_string()
            + "]}";
        let m = missing_parts(&no_rules, &NftConfig::default()).unwrap();
        assert_eq!(m.len(), 2, "{m:?}");
        let empty = r#"{"nftables": [{"metainfo": {}}]}"#;
        let m = missing_parts(empty, &NftConfig::default()).unwrap();
        assert_eq!(m, vec!["table inet tarpit".to_string()]);
        let c = NftConfig {
            set6: "other".into(),
            ..NftConfig::default()
        };
        let m = missing_parts(LISTING, &c).unwrap();
        assert!(
            m.iter().any(|x| x.starts_with("set inet tarpit other")),
            "{m:?}"
        );
        assert_eq!(elements(LISTING, &c).unwrap().0.len(), 3, "only trap4's");
    }

    #[test]
    fn only_our_table_counts() {
        // The same objects under another table name (as in a full ruleset
        // listing with other tables) do not make ours intact.
        let other = LISTING.replace("\"tarpit\"", "\"other\"");
        let m = missing_parts(&other, &NftConfig::default()).unwrap();
        assert_eq!(m, vec!["table inet tarpit".to_string()]);
        // Our table, but the chain and rules live in an `ip` family twin.
        let twin = LISTING.replace(
            "\"family\": \"inet\", \"table\"",
            "\"family\": \"ip\", \"table\"",
        );
        let m = missing_parts(&twin, &NftConfig::default()).unwrap();
        assert_eq!(m.len(), 3, "chain and both rules: {m:?}");
    }

    #[test]
    fn garbage_is_a_parse_error() {
        for bad in ["", "{", "[]", "{\"x\": 1}"] {
            assert!(matches!(
                missing_parts(bad, &NftConfig::default()),
                Err(FwError::Parse(_))
            ));
        }
    }
}
