//! The Stateright Explorer in a real browser: `raftkv-models explore` is
//! opened by headless Chromium, driven over WebDriver (chromedriver, with
//! the `fantoccini` client) the way a person would use it: click five
//! actions in the "Next Action Choices" list (an election: `T0 D01 D10 D01
//! D10`), then read the page. The state panel must show a leader in a
//! readable line and, as a whole state, the messages in flight one per
//! line; the path its five short labels, the sequence diagram the
//! messages, and the properties list every property with its status. A
//! screenshot is kept as an artifact (`target/tmp/explorer.png`).
//!
//! Needs Debian's `chromium` and `chromium-driver`; skipped with a message
//! without them, unless `RAFTKV_REQUIRE_BROWSER=1` (set by `.ci/run`, which
//! installs them).

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use raftkv_models::{model, ModelConfig};
use stateright::Model;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The election, as the Explorer labels its five actions.
const ELECTION: [&str; 5] = [
    "0 election timeout",
    "0->1 PreVote t=1 last=0/0",
    "1->0 PreVoteReply t=1 granted",
    "0->1 Vote t=1 last=0/0",
    "1->0 VoteReply t=1 granted",
];

/// How long the page may take to show what a step asks for (a loaded
/// 2-core machine runs the whole test suite beside this test).
const PAGE_TIMEOUT: Duration = Duration::from_secs(60);

/// Kills a child process and its process group (chromedriver's browser)
/// when the test ends, also when it fails before closing the session.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes the browser's profile directory when the test ends.
struct Profile(PathBuf);

impl Drop for Profile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn on_path(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Chromium and chromedriver, or `None` (and a message) to skip.
fn browser() -> Option<&'static str> {
    let chromium = ["chromium", "chromium-browser", "google-chrome"].into_iter().find(|b| on_path(b));
    match chromium {
        Some(chromium) if on_path("chromedriver") => Some(chromium),
        _ => {
            assert!(
                std::env::var("RAFTKV_REQUIRE_BROWSER").is_err(),
                "RAFTKV_REQUIRE_BROWSER is set but chromium or chromedriver is missing"
            );
            eprintln!("skipped: no chromium or chromedriver (apt-get install chromium chromium-driver)");
            None
        }
    }
}

/// Two distinct free ports on 127.0.0.1, both held until both are chosen.
fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let b = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    (a.local_addr().unwrap().port(), b.local_addr().unwrap().port())
}

/// Waits, boundedly, until a server that was just started accepts
/// connections on `port` (neither prints a line once it is listening).
fn wait_listening(port: u16, what: &str) {
    for _ in 0..600 {
        if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} does not listen on port {port} after 30 s");
}

fn spawn(program: &str, args: &[String]) -> Process {
    let child = Command::new(program)
        .args(args)
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    Process(child)
}

/// The element `xpath` names, once the page shows it.
async fn wait_for(client: &Client, xpath: &str) -> Result<fantoccini::elements::Element, String> {
    client
        .wait()
        .at_most(PAGE_TIMEOUT)
        .for_element(Locator::XPath(xpath))
        .await
        .map_err(|e| format!("the page never showed {xpath}: {e}"))
}

/// Saves what the browser shows as `target/tmp/<name>` and says where.
async fn screenshot(client: &Client, name: &str) -> Result<(), String> {
    let png = client.screenshot().await.map_err(|e| e.to_string())?;
    if !png.starts_with(b"\x89PNG") {
        return Err("the screenshot is not a PNG".into());
    }
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&shot, png).map_err(|e| e.to_string())?;
    eprintln!("screenshot: {}", shot.display());
    Ok(())
}

/// An XPath string literal (the labels hold `"` but never `'`).
fn literal(text: &str) -> String {
    assert!(!text.contains('\''), "{text}");
    format!("'{text}'")
}

#[tokio::test(flavor = "current_thread")]
async fn stepping_through_an_election_in_the_explorer_shows_a_leader() {
    let Some(chromium) = browser() else { return };
    let (explorer_port, driver_port) = free_ports();
    let _explorer = spawn(
        env!("CARGO_BIN_EXE_raftkv-models"),
        &["explore".into(), "--addr".into(), format!("127.0.0.1:{explorer_port}")],
    );
    let _driver = spawn("chromedriver", &[format!("--port={driver_port}")]);
    wait_listening(explorer_port, "raftkv-models explore");
    wait_listening(driver_port, "chromedriver");

    let profile = Profile(std::env::temp_dir().join(format!("raftkv-explorer-browser-{}", std::process::id())));
    let chromium_path = which(chromium);
    let capabilities = headless_chromium(&chromium_path, &profile.0);
    let client = ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("a WebDriver session with headless Chromium");
    let result = drive(&client, explorer_port).await;
    if result.is_err() {
        let _ = screenshot(&client, "explorer-failure.png").await;
    }
    let closed = client.close().await;
    result.unwrap_or_else(|e| panic!("{e}"));
    closed.expect("the WebDriver session ends (and Chromium with it)");
}

/// The test proper; errors come back so that the session is closed first.
async fn drive(client: &Client, explorer_port: u16) -> Result<(), String> {
    client.goto(&format!("http://127.0.0.1:{explorer_port}/#/steps")).await.map_err(|e| e.to_string())?;

    let choices = "//h2[normalize-space(.)='Next Action Choices']/following-sibling::ul[1]/li/a";
    let path = "//ol[contains(@class, 'path-list')]/li";
    // The Explorer's path starts with its "Pre-init" step; the first
    // choice is the model's initial state, then the five actions.
    let taken: Vec<&str> = ["Init 0"].into_iter().chain(ELECTION).collect();
    for (step, label) in taken.iter().enumerate() {
        // Only a link whose label is exactly the action: each step's list
        // has other labels, so a stale list cannot match.
        let link = wait_for(client, &format!("{choices}[normalize-space(.)={}]", literal(label))).await?;
        link.click().await.map_err(|e| format!("click {label:?}: {e}"))?;
        wait_for(client, &format!("{path}[{}]", step + 2)).await?;
    }

    // The path of actions is the five short labels, in order.
    let mut shown = Vec::new();
    for item in client.find_all(Locator::XPath(&format!("{path}/a"))).await.map_err(|e| e.to_string())? {
        shown.push(item.text().await.map_err(|e| e.to_string())?.trim().to_string());
    }
    if shown[..] != ["Pre-init"].into_iter().chain(taken).collect::<Vec<_>>()[..] {
        return Err(format!("the path shows {shown:?}, not the actions taken"));
    }

    // The state panel: server 0 is leader of term 1, in its summary line.
    let state =
        wait_for(client, "//section[contains(@class, 'main-flex-right')]/div[contains(., 'summary: Leader term 1')]")
            .await?;
    let text = state.text().await.map_err(|e| e.to_string())?;
    for noise in ["Envelope {", "ServerConfig", "election_timeout"] {
        if text.contains(noise) {
            return Err(format!("the state panel shows {noise:?}: {text}"));
        }
    }

    // The whole state ("Complete State?"): the messages still in flight,
    // one line each (server 2 has not received the pre-vote or the vote).
    let complete = "//label[contains(normalize-space(.), 'Complete State?')]/input";
    client.find(Locator::XPath(complete)).await.map_err(|e| e.to_string())?.click().await.map_err(|e| e.to_string())?;
    let whole = wait_for(
        client,
        "//section[contains(@class, 'main-flex-right')]/div[contains(., 'network: ') and contains(., 'crashed: none')]",
    )
    .await?;
    let text = whole.text().await.map_err(|e| e.to_string())?;
    for line in ["0->2 PreVote t=1 last=0/0", "0->2 Vote t=1 last=0/0"] {
        if !text.lines().any(|l| l.trim() == line) {
            return Err(format!("the whole state does not list {line:?} on a line of its own: {text}"));
        }
    }

    // The sequence diagram draws the election's messages.
    let svg = wait_for(client, "//section[contains(@class, 'main-flex-right')]//*[local-name()='svg']").await?;
    let drawn = svg.html(false).await.map_err(|e| e.to_string())?;
    if !(drawn.contains("PreVote") && drawn.contains("VoteReply")) {
        return Err(format!("the sequence diagram lacks the election's messages: {drawn}"));
    }

    // Every property of the model, each with its status.
    let properties = "//h3[normalize-space(.)='Global']/following-sibling::ul[1]/li";
    wait_for(client, properties).await?;
    let mut listed = Vec::new();
    for item in client.find_all(Locator::XPath(properties)).await.map_err(|e| e.to_string())? {
        listed.push(item.text().await.map_err(|e| e.to_string())?);
    }
    let expected = model(ModelConfig::ci()).properties();
    let statuses = ["Searching", "Safety holds", "Example found", "Counterexample found", "Example not found"];
    for property in &expected {
        let line = listed
            .iter()
            .find(|line| line.ends_with(property.name))
            .ok_or_else(|| format!("the properties list lacks {:?}: {listed:#?}", property.name))?;
        if !statuses.iter().any(|s| line.contains(s)) {
            return Err(format!("{:?} is listed without a status: {line:?}", property.name));
        }
    }
    if listed.len() != expected.len() {
        return Err(format!("{} properties listed, the model has {}: {listed:#?}", listed.len(), expected.len()));
    }

    screenshot(client, "explorer.png").await
}

/// The browser's full path (chromedriver wants a binary, not a name).
fn which(program: &str) -> String {
    let out = Command::new("sh").args(["-c", &format!("command -v {program}")]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Headless Chromium, with its own profile, no network but loopback.
fn headless_chromium(chromium: &str, profile: &std::path::Path) -> fantoccini::wd::Capabilities {
    let args = [
        "--headless=new".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-breakpad".into(),
        "--disable-crash-reporter".into(),
        "--window-size=1400,1000".into(),
        format!("--user-data-dir={}", profile.display()),
    ];
    let options = serde_json::json!({ "binary": chromium, "args": args });
    let mut capabilities = fantoccini::wd::Capabilities::new();
    capabilities.insert("goog:chromeOptions".into(), options);
    capabilities
}
