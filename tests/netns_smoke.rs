//! The namespace helpers themselves: two hosts joined by veth can talk, and
//! the namespaces are gone after the test.

mod support;
use support::netns::{privileged, veth, Netns};

#[test]
fn two_namespaces_talk_over_veth_and_are_removed() {
    if !privileged("two_namespaces_talk_over_veth_and_are_removed") {
        return;
    }
    let names;
    {
        let a = Netns::new("smk");
        let b = Netns::new("smk");
        veth(&a, "10.77.250.1/24", &b, "10.77.250.2/24");
        let listener = b.in_thread(|| std::net::TcpListener::bind("10.77.250.2:0").unwrap());
        let port = listener.local_addr().unwrap().port();
        let ok = a.in_thread(move || std::net::TcpStream::connect(("10.77.250.2", port)).is_ok());
        assert!(ok, "connect across veth");
        names = (a.name.clone(), b.name.clone());
    }
    let list = String::from_utf8(support::netns::sh("ip netns list").stdout).unwrap();
    assert!(
        !list.contains(&names.0) && !list.contains(&names.1),
        "{list}"
    );
}
