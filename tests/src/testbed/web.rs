//! The proxy's web listener (`--metrics`), as a scraper or the dashboard's page asks it.

use std::io::{Read, Write};

use crate::netns::Netns;

/// The body of `GET path` from `addr`, asked from inside `host`; the answer must be 200 OK.
pub fn http_get(host: &Netns, addr: &str, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let addr = addr.to_string();
    let response = host.run(move || {
        let mut stream = std::net::TcpStream::connect(&addr).expect("the web listener");
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    });
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    body.to_string()
}
