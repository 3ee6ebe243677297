//! The dashboard, as a person sees it: headless Chromium (driven through chromedriver) opens
//! the page of `--metrics` while a redirected v2 connection is open and finds its session id,
//! destination and transport; a second connection opened meanwhile appears without a reload;
//! the page loaded nothing from elsewhere. The screenshot it takes is the README's.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bip324_control::{StatusDocument, TransportKind};
use bip324_e2e::testbed::{
    NODE_PORT, Proxy, REMOTE_V4, REMOTE_V6, RedirectCli, RemoteNode, TAGGED_GID, TwoHosts,
    http_get, noisy_responder,
};
use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

const CLIENT: &str = env!("CARGO_BIN_EXE_e2e-v1-client");
const METRICS: &str = "127.0.0.1:9324";
const CHROMEDRIVER_PORT: u16 = 9515;

/// A client that did its exchange and now holds its connection open; killed when dropped.
struct HeldClient {
    child: Child,
    local: String,
}

impl Drop for HeldClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hold_connection(hosts: &TwoHosts, remote: &str) -> HeldClient {
    let mut child = hosts
        .client
        .command(CLIENT, Some(TAGGED_GID))
        .args([
            remote,
            "--large",
            "200000",
            "--small",
            "50",
            "--hold-ms",
            "60000",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the v1 client");
    let mut values = HashMap::new();
    for line in BufReader::new(child.stdout.take().expect("stdout")).lines() {
        let line = line.expect("the client's report");
        if let Some((key, value)) = line.split_once('=') {
            values.insert(key.to_string(), value.to_string());
        }
        if line.starts_with("bytes_received=") {
            break;
        }
    }
    let local = values.remove("local").expect("the client's local address");
    HeldClient { child, local }
}

/// chromedriver in the client host, in a process group of its own: the browsers it starts go
/// with it, even when the test fails.
struct Chromedriver(Child);

impl Chromedriver {
    fn start(hosts: &TwoHosts) -> Chromedriver {
        let child = hosts
            .client
            .command("chromedriver", None)
            .arg(format!("--port={CHROMEDRIVER_PORT}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; `cargo xtask setup` installs it)");
        Chromedriver(child)
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(-(self.0.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// What the main thread tells the browser's thread, and what it finds.
enum Step {
    /// Expect this connection (session id, destination) on the page.
    Expect(String, String),
    Done,
}

#[test]
fn the_dashboard_shows_live_connections_in_a_browser() {
    let hosts = TwoHosts::create();
    let node = RemoteNode::start(&hosts.remote, noisy_responder);
    let _proxy = Proxy::start(&hosts.client, &["--metrics", METRICS]);
    let cli = RedirectCli::new(&hosts);
    cli.enable_tagged("nftables", &NODE_PORT.to_string());
    let _driver = Chromedriver::start(&hosts);

    let first_remote = format!("{REMOTE_V4}:{NODE_PORT}");
    let first = hold_connection(&hosts, &first_remote);
    let session = |local: &str| {
        let (_, status) = cli.status();
        let connections = status["proxy_status"]["connections"].clone();
        let live = connections
            .as_array()
            .and_then(|c| c.iter().find(|c| c["client"] == local))
            .unwrap_or_else(|| panic!("{local} in the proxy's status: {status}"))
            .clone();
        assert_eq!(live["transport"], "v2", "{live}");
        live["session_id"]
            .as_str()
            .expect("a session id")
            .to_string()
    };
    let first_session = session(&first.local);

    let (to_browser, steps) = mpsc::channel();
    let (found_tx, found) = mpsc::channel();
    let browser = hosts.client.spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(browse(steps, found_tx))
    });
    to_browser
        .send(Step::Expect(first_session.clone(), first_remote))
        .unwrap();
    found
        .recv_timeout(Duration::from_secs(60))
        .expect("the browser found the first connection");

    let second_remote = format!("[{REMOTE_V6}]:{NODE_PORT}");
    let second = hold_connection(&hosts, &second_remote);
    let second_session = session(&second.local);
    to_browser
        .send(Step::Expect(second_session.clone(), second_remote))
        .unwrap();
    found
        .recv_timeout(Duration::from_secs(60))
        .expect("the browser found the second connection without a reload");
    to_browser.send(Step::Done).unwrap();
    let report = browser.join().expect("the browser's thread");
    eprintln!("{report}");

    // The page's data is the control socket's document: it reads as the schema, loses nothing
    // when written back, and tells what the control socket tells.
    let raw = http_get(&hosts.client, METRICS, "/status.json");
    let json: Value = serde_json::from_str(&raw).expect("status.json is JSON");
    let document: StatusDocument = serde_json::from_str(&raw).expect("the control schema");
    assert_eq!(
        serde_json::to_value(&document).unwrap(),
        json,
        "a field outside the schema"
    );
    let (_, status) = cli.status();
    let sessions = |connections: &Value| {
        let connections = connections.as_array().expect("connections");
        connections
            .iter()
            .map(|c| c["session_id"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        sessions(&json["connections"]),
        sessions(&status["proxy_status"]["connections"])
    );
    assert_eq!(document.tallies.opened[&TransportKind::V2], 2);
    assert!(document.tallies.wire.v2 > 400_000, "{:?}", document.tallies);
    assert!(!document.traffic.is_empty());

    // The page showed the sessions the remote node itself reports: no copy of the proxy's
    // claim, the node's own account.
    drop((first, second));
    let reports = node.responder.wait_for_reports(2, Duration::from_secs(10));
    let node_sessions: Vec<String> = reports
        .iter()
        .map(|r| hex::encode(r.session_id.expect("a v2 session")))
        .collect();
    for shown in [&first_session, &second_session] {
        assert!(
            node_sessions.contains(shown),
            "{shown} not among the node's {node_sessions:?}"
        );
    }
}

/// Opens the page and follows `steps`; returns what it saw of the page's loads.
async fn browse(steps: mpsc::Receiver<Step>, found: mpsc::Sender<()>) -> String {
    let client = connect().await;
    let page = format!("http://{METRICS}/");
    client.goto(&page).await.expect("open the dashboard");
    // Set once: a reload would lose it.
    client
        .execute("window.loadedOnce = true; return null;", vec![])
        .await
        .expect("mark the page");
    let mut report = String::new();
    while let Ok(Step::Expect(session, destination)) = steps.recv() {
        let row = wait_for_row(&client, &session).await;
        assert_eq!(row["destination"], destination, "{row}");
        assert_eq!(row["transport"], "v2", "{row}");
        assert_eq!(row["front"], "redirect", "{row}");
        assert_eq!(
            client
                .execute("return window.loadedOnce === true;", vec![])
                .await
                .unwrap(),
            json!(true),
            "the page was reloaded"
        );
        found.send(()).unwrap();
    }
    // Let the numbers settle, then the picture and the account of every load.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let png = client.screenshot().await.expect("a screenshot");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&path, png).expect("write the screenshot");
    report.push_str(&format!("screenshot: {}\n", path.display()));
    let loads = client
        .execute(
            "return performance.getEntriesByType('resource').map(e => e.name)\
             .concat(performance.getEntriesByType('navigation').map(e => e.name));",
            vec![],
        )
        .await
        .unwrap();
    let loads: Vec<String> = serde_json::from_value(loads).unwrap();
    let origin = format!("http://{METRICS}/");
    assert!(
        loads.iter().all(|url| url.starts_with(&origin)),
        "the page loaded something from elsewhere: {loads:?}"
    );
    for needed in ["dashboard.js", "dashboard.css", "status.json"] {
        assert!(
            loads.iter().any(|url| url.contains(needed)),
            "{needed} not loaded: {loads:?}"
        );
    }
    let navigations = loads.iter().filter(|url| **url == page).count();
    assert_eq!(navigations, 1, "one navigation, no reload: {loads:?}");
    report.push_str(&format!("loads: {}\n", loads.len()));
    client.close().await.expect("close the browser");
    report
}

async fn connect() -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1500,1100"],
        }),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let attempt = ClientBuilder::new(connector)
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{CHROMEDRIVER_PORT}"))
            .await;
        match attempt {
            Ok(client) => return client,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for chromedriver: {e}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => panic!("chromedriver did not start a browser: {e}"),
        }
    }
}

/// The connections table's row that shows `session`, read as the person sees it (the text of
/// each cell), within ten seconds.
async fn wait_for_row(client: &Client, session: &str) -> Value {
    let script = "const wanted = arguments[0];
        for (const row of document.querySelectorAll('#connections tbody tr')) {
          const cells = {};
          for (const cell of row.cells) cells[cell.dataset.cell] = cell.innerText.trim();
          if (cells.session === wanted) return cells;
        }
        return null;";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row = client
            .execute(script, vec![json!(session)])
            .await
            .expect("read the page");
        if !row.is_null() {
            return row;
        }
        let text = client
            .execute("return document.body.innerText;", vec![])
            .await
            .unwrap();
        assert!(
            Instant::now() < deadline,
            "session {session} not on the page within 10 s; it shows:\n{}",
            text.as_str().unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
