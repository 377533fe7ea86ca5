//! The web UI in headless Chromium over WebDriver (Debian's `chromium` and `chromium-driver`):
//! each page loads with no script error, a running topology's numbers change, and the
//! deactivate button (after its confirmation) deactivates it.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use squall_tests::sandbox::ClusterSandbox;

const TOPOLOGY: &str = env!("CARGO_BIN_EXE_test_topology");

/// A `chromedriver` on a free port, stopped on drop.
struct ChromeDriver {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl ChromeDriver {
    fn start(dir: &std::path::Path) -> ChromeDriver {
        let port =
            TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port");
        let log = dir.join("chromedriver.log");
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run chromedriver (Debian's `chromium-driver`; scripts/setup installs it): {e}")
            });
        let driver = ChromeDriver { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = ureq::get(&format!("http://127.0.0.1:{port}/status"))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
                .is_some_and(|s| s["value"]["ready"] == true);
            if ready {
                return driver;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start: {}", driver.log_tail());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 200 ms until it gives `Some`, panicking with `what` after `timeout`.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn text_of(client: &fantoccini::Client, css: &str) -> Option<String> {
    client.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

async fn rows(client: &fantoccini::Client, css: &str) -> usize {
    client.find_all(Locator::Css(css)).await.map(|r| r.len()).unwrap_or(0)
}

/// The page's script errors so far.
async fn script_errors(client: &fantoccini::Client) -> Vec<Value> {
    let errors =
        client.execute("return window.__squallErrors || ['no error log: the page did not load']", vec![]).await;
    errors.ok().and_then(|e| e.as_array().cloned()).unwrap_or_else(|| vec![json!("cannot read the page's errors")])
}

async fn screenshot(client: &fantoccini::Client, name: &str) {
    let png = client.screenshot().await.expect("a screenshot");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("web-ui-{name}.png"));
    std::fs::write(&path, png).expect("writes the screenshot");
    eprintln!("screenshot: {}", path.display());
}

#[test]
fn the_web_ui_shows_a_running_topology_and_deactivates_it() {
    let env = [("SQUALL_TEST_FAIL_EVERY", "500"), ("SQUALL_TEST_SENTENCES", "5000000")];
    let sandbox = ClusterSandbox::start_with(1, 1, 2, &env);
    sandbox.cli_ok(&["submit", TOPOLOGY, "--name", "web", "-c", "topology.workers=2"]);
    let driver = ChromeDriver::start(sandbox.dir.path());
    let base = format!("http://{}", sandbox.nimbus_address(0));
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let mut capabilities = serde_json::Map::new();
        let args =
            ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1200"];
        capabilities.insert("goog:chromeOptions".to_owned(), json!({ "args": args }));
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .unwrap_or_else(|e| panic!("cannot start chromium: {e}\n{}", driver.log_tail()));

        // The cluster page: the topology, the supervisor and its slots.
        client.goto(&format!("{base}/")).await.expect("opens the cluster page");
        let link = eventually("the topology in the cluster page", Duration::from_secs(30), || async {
            let text = text_of(&client, "#topologies a").await?;
            (text == "web").then_some(text)
        })
        .await;
        assert_eq!(link, "web");
        assert_eq!(text_of(&client, "[data-metric=supervisors]").await.as_deref(), Some("1"));
        assert_eq!(text_of(&client, "[data-metric=slots]").await.as_deref(), Some("2 / 2"));
        screenshot(&client, "cluster").await;
        assert_eq!(script_errors(&client).await, Vec::<Value>::new());

        // The topology page: its numbers move.
        client.find(Locator::Css("#topologies a")).await.expect("the link").click().await.expect("clicks");
        let first = eventually("the topology page", Duration::from_secs(30), || async {
            text_of(&client, "[data-metric=emitted]").await.filter(|t| t != "0")
        })
        .await;
        let later = eventually("the emitted count to change", Duration::from_secs(30), || async {
            text_of(&client, "[data-metric=emitted]").await.filter(|t| *t != first)
        })
        .await;
        assert_ne!(first, later);
        assert!(rows(&client, "#errors tbody tr").await >= 1, "split's errors are listed");
        eventually("a throughput in the chart", Duration::from_secs(30), || async {
            text_of(&client, "[data-metric=rate]").await.filter(|t| t != "–" && t != "0")
        })
        .await;
        screenshot(&client, "topology").await;
        assert_eq!(script_errors(&client).await, Vec::<Value>::new());

        // A component page: its two executors and its errors.
        client.goto(&format!("{base}/#/topology/web/component/split")).await.expect("opens the component page");
        eventually("split's executors", Duration::from_secs(30), || async {
            (rows(&client, "#executors tbody tr").await == 2).then_some(())
        })
        .await;
        assert!(rows(&client, "#component-errors tbody tr").await >= 1);
        screenshot(&client, "component").await;
        assert_eq!(script_errors(&client).await, Vec::<Value>::new());

        // Deactivate, confirmed: the status changes on the page and in the API.
        client.goto(&format!("{base}/#/topology/web")).await.expect("opens the topology page");
        let button = eventually("the deactivate button", Duration::from_secs(30), || async {
            client.find(Locator::Css("button[data-action=deactivate]")).await.ok()
        })
        .await;
        button.click().await.expect("clicks deactivate");
        let question =
            eventually("the confirmation", Duration::from_secs(10), || async { client.get_alert_text().await.ok() })
                .await;
        assert_eq!(question, "Deactivate topology web?");
        client.accept_alert().await.expect("confirms");
        eventually("the status to read INACTIVE", Duration::from_secs(30), || async {
            (text_of(&client, "#status").await.as_deref() == Some("INACTIVE")).then_some(())
        })
        .await;
        screenshot(&client, "deactivated").await;
        assert_eq!(script_errors(&client).await, Vec::<Value>::new());
        client.close().await.expect("ends the session");
    });
    let details = sandbox.describe("web");
    assert_eq!(details["summary"]["status"], "inactive", "{details}");
    sandbox.cli_ok(&["kill", "web", "--wait", "0"]);
}
