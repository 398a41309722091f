//! The addresses configured on this host's interfaces, through nix's
//! getifaddrs (it walks the list and frees it; no raw pointers here).

use std::io;
use std::net::IpAddr;

/// Every address configured on this host's interfaces (in the current
/// network namespace), from getifaddrs(3). The watcher never bans these.
pub fn local_addresses() -> io::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs()? {
        let Some(addr) = ifa.address else { continue };
        if let Some(sin) = addr.as_sockaddr_in() {
            out.push(IpAddr::V4(sin.ip()));
        } else if let Some(sin6) = addr.as_sockaddr_in6() {
            out.push(IpAddr::V6(sin6.ip()));
        }
    }
    Ok(out)
}
