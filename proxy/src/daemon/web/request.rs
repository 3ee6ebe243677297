//! What a request to the web listener asks for: parsed from its head alone (no body is ever
//! read) and routed without I/O, so every refusal is a unit test.

/// The one file served besides the data: the page, its script and its style, compiled in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Asset {
    Page,
    Script,
    Style,
}

impl Asset {
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Asset::Page => "text/html; charset=utf-8",
            Asset::Script => "text/javascript; charset=utf-8",
            Asset::Style => "text/css; charset=utf-8",
        }
    }

    pub(crate) fn body(self) -> &'static str {
        match self {
            Asset::Page => include_str!("page/index.html"),
            Asset::Script => include_str!("page/dashboard.js"),
            Asset::Style => include_str!("page/dashboard.css"),
        }
    }
}

/// What to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Asset(Asset),
    /// The status document, as the control socket has it.
    Status,
    /// Prometheus' text format.
    Metrics,
    NotFound,
    /// Anything but GET: nothing here changes anything.
    MethodNotAllowed,
    /// The page or its data asked by a name that is not this host's: a page elsewhere that
    /// made its name resolve to this address (DNS rebinding) would otherwise read every
    /// client's address and destination.
    ForeignHost,
    BadRequest,
}

/// Routes a request head (the request line and headers, without the blank line).
/// `own_names` are the names this host answers to besides addresses and `localhost`.
pub(crate) fn route(head: &[u8], own_names: &[String]) -> Route {
    let Ok(head) = std::str::from_utf8(head) else {
        return Route::BadRequest;
    };
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(version), None) = (
        request_line.next(),
        request_line.next(),
        request_line.next(),
        request_line.next(),
    ) else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let hosts: Vec<&str> = lines
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("host"))
        .map(|(_, value)| value.trim())
        .collect();
    // HTTP/1.1 requires exactly one; a scraper speaking HTTP/1.0 may send none.
    let own_host = match hosts.as_slice() {
        [host] => is_own_host(host, own_names),
        [] if version == "HTTP/1.0" => true,
        _ => return Route::BadRequest,
    };
    if method != "GET" {
        return Route::MethodNotAllowed;
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let route = match path {
        // Prometheus names its target as configured (any DNS name): the counters are served
        // whatever the Host.
        "/metrics" => return Route::Metrics,
        "/" | "/index.html" => Route::Asset(Asset::Page),
        "/dashboard.js" => Route::Asset(Asset::Script),
        "/dashboard.css" => Route::Asset(Asset::Style),
        "/status.json" => Route::Status,
        _ => Route::NotFound,
    };
    if own_host { route } else { Route::ForeignHost }
}

/// An address, `localhost`, or one of `own_names`, each with an optional port.
fn is_own_host(host: &str, own_names: &[String]) -> bool {
    if host.parse::<std::net::SocketAddr>().is_ok() || host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    if host.starts_with('[') {
        return host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.parse::<u16>().is_ok() => name,
        Some(_) => return false,
        None => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    name.eq_ignore_ascii_case("localhost")
        || own_names.iter().any(|own| name.eq_ignore_ascii_case(own))
}

/// The names this host answers to in a browser's address bar: its host name and, for mDNS,
/// that name under `.local`.
pub(crate) fn own_names() -> Vec<String> {
    let Ok(name) = nix::unistd::gethostname() else {
        return Vec::new();
    };
    let name = name.to_string_lossy().into_owned();
    if name.is_empty() {
        return Vec::new();
    }
    vec![format!("{name}.local"), name]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(target: &str, host: &str) -> Route {
        let head = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nAccept: */*");
        route(head.as_bytes(), &["router".to_string()])
    }

    #[test]
    fn the_page_its_files_the_data_and_the_metrics() {
        assert_eq!(get("/", "127.0.0.1:9324"), Route::Asset(Asset::Page));
        assert_eq!(
            get("/dashboard.js", "localhost:9324"),
            Route::Asset(Asset::Script)
        );
        assert_eq!(
            get("/dashboard.css", "[::1]:9324"),
            Route::Asset(Asset::Style)
        );
        assert_eq!(get("/status.json?t=1", "192.168.1.1"), Route::Status);
        assert_eq!(get("/", "router:9324"), Route::Asset(Asset::Page));
        assert_eq!(get("/status.json", "ROUTER.:9324"), Route::Status);
        assert_eq!(
            get("/metrics", "node-exporter.example:9324"),
            Route::Metrics,
            "Prometheus names its targets as configured"
        );
        assert_eq!(get("/etc/passwd", "localhost"), Route::NotFound);
        assert_eq!(get("/../status.json", "localhost"), Route::NotFound);
    }

    #[test]
    fn a_name_that_is_not_this_hosts_is_refused() {
        for host in [
            "attacker.example:9324",
            "router.attacker.example",
            "localhost.attacker.example",
            "127.0.0.1.nip.io",
            "localhost:notaport",
            "[::1",
            "",
        ] {
            assert_eq!(get("/status.json", host), Route::ForeignHost, "{host:?}");
            assert_eq!(get("/", host), Route::ForeignHost, "{host:?}");
        }
    }

    #[test]
    fn only_get_and_well_formed_heads() {
        let post = "POST /status.json HTTP/1.1\r\nHost: localhost";
        assert_eq!(route(post.as_bytes(), &[]), Route::MethodNotAllowed);
        let two_hosts = "GET / HTTP/1.1\r\nHost: localhost\r\nHost: evil.example";
        assert_eq!(route(two_hosts.as_bytes(), &[]), Route::BadRequest);
        let no_host = "GET / HTTP/1.1\r\nAccept: */*";
        assert_eq!(route(no_host.as_bytes(), &[]), Route::BadRequest);
        let old = "GET /metrics HTTP/1.0";
        assert_eq!(route(old.as_bytes(), &[]), Route::Metrics);
        for head in [
            &b"GET /\xff HTTP/1.1"[..],
            b"GET / HTTP/2",
            b"GET  / HTTP/1.1",
            b"",
        ] {
            assert_eq!(route(head, &[]), Route::BadRequest, "{head:?}");
        }
    }
}
