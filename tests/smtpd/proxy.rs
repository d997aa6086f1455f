//! PROXY protocol v1/v2 on listeners behind a load balancer: the real client
//! address reaches limits, `Received:` and `ip_addr`; nobody else can forge it.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::support::{Client, Server, simple_message};

fn proxy_port(server: &Server) -> u16 {
    server.listener_port("PROXY protocol")
}

fn proxied_server(extra: &str) -> (Server, SocketAddr) {
    let server = Server::with_config(&format!(
        "[proxy]\nlisten = [\"127.0.0.1:0\"]\ntrusted_networks = [\"127.0.0.1/32\", \"::1\"]\n{extra}"
    ));
    let addr = SocketAddr::from(([127, 0, 0, 1], proxy_port(&server)));
    (server, addr)
}

/// Connects, sends `header` (in pieces split at `split`), and returns the client
/// after its 220.
fn via_proxy(addr: SocketAddr, header: &[u8], split: usize) -> Client {
    let mut stream = TcpStream::connect(addr).unwrap();
    let (a, b) = header.split_at(split.min(header.len()));
    stream.write_all(a).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    stream.write_all(b).unwrap();
    let mut c = Client::from_stream(stream);
    c.expect(220, "");
    c
}

fn v2_tcp6(src: [u16; 8], dst: [u16; 8], sport: u16, dport: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\x00\r\nQUIT\n".to_vec();
    h.push(0x21); // v2, PROXY
    h.push(0x21); // AF_INET6, STREAM
    let tlv = [0x04u8, 0x00, 0x01, 0x00]; // a NOOP TLV (type 4), 1 byte, to skip
    h.extend_from_slice(&((36 + tlv.len()) as u16).to_be_bytes());
    for w in src.iter().chain(&dst) {
        h.extend_from_slice(&w.to_be_bytes());
    }
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&tlv);
    h
}

#[test]
fn v1_header_gives_the_real_client_address() {
    let (server, addr) = proxied_server("");
    let header = b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 25\r\n";
    let mut c = via_proxy(addr, header, 9);
    c.ehlo("client.example");
    let id = c.deliver("s@example.org", &["x@example.com"], &simple_message("v1"));
    let rows = server.rows_for(&id);
    assert_eq!(rows[0].ip_addr, "203.0.113.7");
    assert!(
        String::from_utf8_lossy(&rows[0].mail)
            .starts_with("Received: from client.example ([203.0.113.7])")
    );
}

#[test]
fn v2_header_with_tlvs_gives_the_real_client_address() {
    let (server, addr) = proxied_server("");
    let header = v2_tcp6(
        [0x2001, 0xdb8, 0, 0, 0, 0, 0, 5],
        [0, 0, 0, 0, 0, 0, 0, 1],
        40000,
        25,
    );
    let mut c = via_proxy(addr, &header, 14);
    c.ehlo("client.example");
    let id = c.deliver("s@example.org", &["x@example.com"], &simple_message("v2"));
    let rows = server.rows_for(&id);
    assert_eq!(rows[0].ip_addr, "2001:db8::5");
    assert!(String::from_utf8_lossy(&rows[0].mail).contains("([IPv6:2001:db8::5])"));
}

#[test]
fn a_proxy_listener_requires_the_header_first() {
    let (server, addr) = proxied_server("");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // No banner before the header...
    let mut c = Client::from_stream(stream.try_clone().unwrap());
    assert!(c.is_quiet_for(Duration::from_millis(300)));
    // ...and SMTP instead of a header ends the connection.
    stream.write_all(b"EHLO client.example\r\n").unwrap();
    c.expect_closed();
    assert_eq!(server.row_count(), 0);
}

#[test]
fn untrusted_peers_cannot_use_a_proxy_listener() {
    let server = Server::with_config(
        "[proxy]\nlisten = [\"127.0.0.1:0\"]\ntrusted_networks = [\"10.0.0.0/8\"]\n",
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], proxy_port(&server)));
    let mut c = Client::connect(addr);
    c.expect(421, "4.7.0");
    c.expect_closed();
}

#[test]
fn a_proxy_header_on_an_ordinary_listener_is_just_an_unknown_command() {
    let (server, _) = proxied_server("");
    let mut c = server.client();
    c.cmd_expect("PROXY TCP4 203.0.113.7 127.0.0.1 40000 25", 500, "5.5.2");
    c.ehlo("client.example");
    let id = c.deliver(
        "s@example.org",
        &["x@example.com"],
        &simple_message("plain"),
    );
    assert_eq!(server.rows_for(&id)[0].ip_addr, "127.0.0.1");
}

#[test]
fn per_ip_limits_apply_to_the_real_client_address() {
    let (_server, addr) =
        proxied_server("[limits]\nexempt_loopback = false\nmax_connections_per_ip = 1\n");
    let _first = via_proxy(addr, b"PROXY TCP4 198.51.100.1 127.0.0.1 1 25\r\n", 0);
    // Same client again: refused, though the proxy (127.0.0.1) is the same.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"PROXY TCP4 198.51.100.1 127.0.0.1 2 25\r\n")
        .unwrap();
    let mut c = Client::from_stream(stream);
    let r = c.read_reply();
    r.assert(421, "4.7.0");
    // Another client behind the same proxy: fine.
    let _other = via_proxy(addr, b"PROXY TCP4 198.51.100.2 127.0.0.1 3 25\r\n", 0);
}
