//! The web console: in a real browser (Debian's Chromium driven over the DevTools protocol,
//! every request it makes recorded) and over plain HTTP for what a browser would hide
//! (cookie attributes, forged cross-site posts, bounds).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::network::{CookieSameSite, EventRequestWillBeSent};
use chromiumoxide::page::ScreenshotParams;
use chromiumoxide::Page;
use emporium_event_store::testing::TestDataDir;
use emporium_gateway::keys::Role;
use emporium_sagas::CheckoutConfig;
use emporium_tests::{Backend, TestApp, ADMIN_KEY};
use futures::StreamExt;
use serde_json::Value;

/// Debian's Chromium (the test script installs it); the test fails without it.
fn chromium() -> PathBuf {
    let path = PathBuf::from(
        std::env::var("EMPORIUM_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    assert!(
        path.exists(),
        "no Chromium at {}: run the suite with `bash scripts/test.sh`, which installs it \
         (Debian: apt-get install chromium), or set EMPORIUM_CHROMIUM",
        path.display()
    );
    path
}

/// Where the test saves its screenshots: under the build directory.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Chrome {
    browser: Browser,
    handler: tokio::task::JoinHandle<()>,
    _profile: TestDataDir,
}

impl Chrome {
    async fn launch() -> Self {
        let profile = TestDataDir::create();
        let config = BrowserConfig::builder()
            .chrome_executable(chromium())
            .no_sandbox()
            .user_data_dir(profile.path())
            .window_size(1400, 1000)
            .viewport(None)
            .disable_cache()
            .args([
                "--disable-gpu",
                "--disable-component-update",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-sync",
            ])
            .build()
            .unwrap();
        let (browser, mut events) = Browser::launch(config).await.expect("launch Chromium");
        let handler = tokio::spawn(async move {
            // Messages this crate cannot parse are logged and skipped, not fatal.
            while let Some(r) = events.next().await {
                if let Err(e) = r {
                    eprintln!("browser: {e}");
                }
            }
        });
        Self {
            browser,
            handler,
            _profile: profile,
        }
    }

    /// A blank tab whose every request is recorded from before its first navigation.
    async fn page(&self) -> (Page, Arc<Mutex<Vec<String>>>) {
        let page = self.browser.new_page("about:blank").await.unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut requests = page
            .event_listener::<EventRequestWillBeSent>()
            .await
            .unwrap();
        let log = seen.clone();
        tokio::spawn(async move {
            while let Some(e) = requests.next().await {
                log.lock().unwrap().push(e.request.url.clone());
            }
        });
        (page, seen)
    }

    async fn close(mut self) {
        let _ = self.browser.close().await;
        let _ = self.browser.wait().await;
        let _ = self.handler.await;
    }
}

async fn js<T: serde::de::DeserializeOwned>(page: &Page, script: &str) -> T {
    page.evaluate(script)
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"))
        .into_value()
        .unwrap_or_else(|e| panic!("{script}: {e}"))
}

/// Polls `condition` (JavaScript returning a boolean) until it holds or `limit` passes.
async fn wait_for(page: &Page, condition: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        // While a navigation is under way the page has no context to evaluate in yet.
        let now = match page.evaluate(condition).await {
            Ok(v) => v.into_value::<bool>().unwrap_or(false),
            Err(_) => false,
        };
        if now {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn goto(page: &Page, url: &str) {
    page.goto(url)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
}

async fn sign_in(page: &Page, base: &str, key: &str) {
    goto(page, &format!("{base}/console/login")).await;
    page.find_element("#key")
        .await
        .unwrap()
        .click()
        .await
        .unwrap()
        .type_str(key)
        .await
        .unwrap();
    page.find_element("form.signin button")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    page.wait_for_navigation().await.unwrap();
    // Signed in (another page) or refused (the form again, with its reason).
    let done = "document.readyState === 'complete' && (location.pathname !== '/console/login' \
                || document.querySelector('.error') !== null)";
    assert!(
        wait_for(page, done, Duration::from_secs(10)).await,
        "sign-in did not finish"
    );
}

async fn sign_out(page: &Page) {
    page.find_element("form.signout button")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    page.wait_for_navigation().await.unwrap();
    let done = "document.readyState === 'complete' && location.pathname === '/console/login'";
    assert!(
        wait_for(page, done, Duration::from_secs(10)).await,
        "sign-out did not finish"
    );
}

async fn screenshot(page: &Page, name: &str) -> PathBuf {
    let path = screenshot_dir().join(format!("{name}.png"));
    page.save_screenshot(ScreenshotParams::builder().full_page(true).build(), &path)
        .await
        .unwrap();
    path
}

async fn heading(page: &Page) -> String {
    js(
        page,
        "document.querySelector('h1') ? document.querySelector('h1').textContent : ''",
    )
    .await
}

/// A shop with two warehouses, three products and a few confirmed orders.
async fn shop(app: &TestApp) -> Vec<String> {
    assert_eq!(
        app.create_warehouse("wh-north", "eu-west", 1).await.status,
        201
    );
    assert_eq!(
        app.create_warehouse("wh-south", "eu-south", 2).await.status,
        201
    );
    for (sku, price) in [("LAMP-1", 2_500), ("DESK-3", 12_000), ("BULB-7", 399)] {
        assert_eq!(
            app.create_product(sku, &format!("{sku} product"), price)
                .await
                .status,
            201
        );
        assert_eq!(app.receive("wh-north", sku, 40).await.status, 200);
        assert_eq!(app.receive("wh-south", sku, 40).await.status, 200);
    }
    let mut ids = Vec::new();
    for (i, lines) in [
        &[("LAMP-1", 1), ("BULB-7", 4)][..],
        &[("DESK-3", 1)][..],
        &[("BULB-7", 2), ("LAMP-1", 2)][..],
    ]
    .iter()
    .enumerate()
    {
        let placed = app.place_order(&format!("c-{i}"), lines).await;
        assert_eq!(placed.status, 202, "{:?}", placed.body);
        ids.push(placed.body["order_id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        app.wait_for_status(id, "confirmed", Duration::from_secs(30))
            .await;
    }
    ids
}

/// The suite's Python (scripts/python-env.sh); the test fails, never skips, without it.
fn python() -> PathBuf {
    let venv = std::env::var("EMPORIUM_PY_VENV").expect(
        "EMPORIUM_PY_VENV names the virtualenv with pandas: run the suite with \
         `bash scripts/test.sh` (or `export EMPORIUM_PY_VENV=$(bash scripts/python-env.sh)`)",
    );
    Path::new(&venv).join("bin/python")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_analysts_and_auditors_use_the_console_in_a_real_browser() {
    let app = TestApp::with_checkout(Backend::Postgres, CheckoutConfig::default(), None).await;
    let ids = shop(&app).await;
    let base = app.base.clone();
    let analyst = app.key(Role::Analyst, None).await;
    let auditor = app.key(Role::Auditor, None).await;
    let client = app.key(Role::Client, Some("c-9")).await;
    let admin = app.key(Role::Admin, None).await;
    let chrome = Chrome::launch().await;
    let (page, requests) = chrome.page().await;

    // The sign-in page, and the analyst's overview.
    goto(&page, &format!("{base}/console/login")).await;
    screenshot(&page, "login").await;
    sign_in(&page, &base, &analyst).await;
    assert_eq!(heading(&page).await, "Overview");
    // The overview's first load, as a signed-in analyst opens it.
    let first_request = requests.lock().unwrap().len();
    goto(&page, &format!("{base}/console/overview")).await;
    assert!(
        wait_for(
            &page,
            "document.body.getAttribute('data-live') === 'yes'",
            Duration::from_secs(5)
        )
        .await,
        "the overview's live stream did not open"
    );
    let overview_requests: Vec<String> = requests.lock().unwrap()[first_request..].to_vec();
    let cookies = page.get_cookies().await.unwrap();
    let session = cookies
        .iter()
        .find(|c| c.name == "emporium_console")
        .expect("a session cookie");
    assert!(session.http_only, "{session:?}");
    assert_eq!(
        session.same_site,
        Some(CookieSameSite::Strict),
        "{session:?}"
    );
    assert_eq!(session.path, "/console");

    // A new order shows in the count and the chart within 2 s, without a reload.
    let count: String = js(&page, "document.getElementById('orders-count').textContent").await;
    let chart: String = js(
        &page,
        "document.getElementById('orders-chart').dataset.total",
    )
    .await;
    assert_eq!(count, "3");
    assert_eq!(chart, "3");
    let _: Value = js(&page, "window.notReloaded = 42").await;
    let placed_at = Instant::now();
    let placed = app.place_order("c-7", &[("LAMP-1", 1)]).await;
    assert_eq!(placed.status, 202);
    let order_id = placed.body["order_id"].as_str().unwrap().to_string();
    let shown = wait_for(
        &page,
        "document.getElementById('orders-count').textContent === '4' \
         && document.getElementById('orders-chart').dataset.total === '4'",
        Duration::from_secs(2),
    )
    .await;
    let took = placed_at.elapsed();
    assert!(shown, "the overview did not show the new order within 2 s");
    assert_eq!(
        js::<i64>(&page, "window.notReloaded").await,
        42,
        "the page was reloaded"
    );
    eprintln!(
        "overview showed the new order {} ms after it was placed",
        took.as_millis()
    );
    app.wait_for_status(&order_id, "confirmed", Duration::from_secs(30))
        .await;
    assert!(
        wait_for(
            &page,
            "document.querySelector('#revenue li') !== null",
            Duration::from_secs(5)
        )
        .await
    );
    let overview_shot = screenshot(&page, "overview").await;
    if std::env::var("EMPORIUM_DOCS_SCREENSHOTS").is_ok() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/console-overview.png");
        std::fs::copy(&overview_shot, docs).unwrap();
    }

    // The overview's first load: only from the engine, and under 300 KB.
    let token = session.value.clone();
    let http = reqwest::Client::new();
    let mut bytes = 0;
    for url in &overview_requests {
        assert!(
            url.starts_with(&base),
            "the overview loaded {url} from outside the engine"
        );
        if url.ends_with("/console/overview/stream") {
            continue; // the live stream, not part of the load
        }
        let r = http
            .get(url)
            .header("cookie", format!("emporium_console={token}"))
            .send()
            .await
            .unwrap();
        bytes += r.bytes().await.unwrap().len();
    }
    assert!(
        bytes < 300 * 1024,
        "the overview's first load is {bytes} bytes"
    );
    eprintln!(
        "overview first load: {} requests, {bytes} bytes",
        overview_requests.len()
    );

    // Events: filtered by type, and a CSV of that selection that pandas reads.
    goto(
        &page,
        &format!("{base}/console/events?event_type=OrderPlaced"),
    )
    .await;
    let types: Vec<String> = js(
        &page,
        "Array.from(document.querySelectorAll('#events .event-type')).map(e => e.textContent)",
    )
    .await;
    assert_eq!(types.len(), 4, "{types:?}");
    assert!(types.iter().all(|t| t == "OrderPlaced"), "{types:?}");
    screenshot(&page, "events").await;
    let csv: String = js(
        &page,
        "fetch(document.getElementById('download-csv').href).then(r => r.text())",
    )
    .await;
    let dir = TestDataDir::create();
    let file = dir.path().join("orders.csv");
    std::fs::write(&file, &csv).unwrap();
    let out = std::process::Command::new(python())
        .arg("-c")
        .arg(
            "import sys, json, pandas\n\
             df = pandas.read_csv(sys.argv[1])\n\
             print(json.dumps({'rows': len(df), 'types': sorted(set(df.event_type)), \
             'ids': sorted(df.aggregate_id)}))",
        )
        .arg(&file)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "pandas: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(read["rows"], 4, "{read}");
    assert_eq!(read["types"], serde_json::json!(["OrderPlaced"]));
    let mut all = ids.clone();
    all.push(order_id.clone());
    all.sort();
    assert_eq!(read["ids"], serde_json::json!(all));

    // An analyst may not open the System page.
    goto(&page, &format!("{base}/console/system")).await;
    assert!(
        heading(&page).await.starts_with("403"),
        "{}",
        heading(&page).await
    );
    goto(&page, &format!("{base}/console/overview")).await;
    sign_out(&page).await;

    // A client key cannot sign in.
    sign_in(&page, &base, &client).await;
    let refused: String = js(&page, "document.querySelector('.error').textContent").await;
    assert!(refused.contains("Client keys cannot sign in"), "{refused}");
    assert!(
        !page
            .get_cookies()
            .await
            .unwrap()
            .iter()
            .any(|c| c.name == "emporium_console" && !c.value.is_empty()),
        "a client key got a session"
    );

    // The order is shipped from where it was allocated, and the lamp comes back.
    let order = app.get(&format!("/v1/orders/{order_id}")).await.body;
    let wh = order["allocation"][0]["warehouse_id"]
        .as_str()
        .unwrap()
        .to_string();
    let shipped = app
        .post(
            &format!("/v1/orders/{order_id}/shipments"),
            serde_json::json!({"warehouse_id": wh, "lines": [{"sku": "LAMP-1", "qty": 1}]}),
        )
        .await;
    assert!(shipped.status < 300, "{:?}", shipped.body);
    let returned = app
        .post(
            &format!("/v1/orders/{order_id}/returns"),
            serde_json::json!({"reason": "changed my mind",
                "lines": [{"sku": "LAMP-1", "qty": 1, "restock": true, "warehouse_id": wh}]}),
        )
        .await;
    assert!(returned.status < 300, "{:?}", returned.body);

    // An auditor opens the order and sees every timeline event in feed order with its
    // correlation id, as the API's timeline has them, and its shipment and return.
    sign_in(&page, &base, &auditor).await;
    goto(&page, &format!("{base}/console/orders")).await;
    screenshot(&page, "orders").await;
    goto(&page, &format!("{base}/console/orders/{order_id}")).await;
    let api = app
        .send_as(
            Some(&auditor),
            reqwest::Method::GET,
            &format!("/v1/orders/{order_id}/timeline"),
            None,
        )
        .await;
    assert_eq!(api.status, 200);
    let expected: Vec<(i64, String)> = api.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["position"].as_i64().unwrap(),
                e["metadata"]["correlation_id"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert!(expected.len() >= 5, "{expected:?}");
    assert!(expected.windows(2).all(|w| w[0].0 < w[1].0));
    let shown: Vec<(i64, String)> = js(
        &page,
        "Array.from(document.querySelectorAll('#timeline tr.event')).map(r => \
         [Number(r.dataset.position), r.querySelector('.correlation').textContent.trim()])",
    )
    .await;
    assert_eq!(shown, expected);
    let moved: Vec<usize> = js(
        &page,
        "[document.querySelectorAll('#shipments tbody tr').length, \
          document.querySelectorAll('#returns tbody tr').length]",
    )
    .await;
    assert_eq!(moved, vec![1, 1]);
    // No digest is signed in this engine (no --audit-key): the badge says so.
    let badge: String = js(&page, "document.getElementById('verification').className").await;
    assert_eq!(badge, "badge pending");
    screenshot(&page, "order").await;
    sign_out(&page).await;

    // Admin: catalog and system pages.
    sign_in(&page, &base, &admin).await;
    app.search_caught_up().await;
    goto(&page, &format!("{base}/console/catalog?q=lamp")).await;
    let skus: Vec<String> = js(
        &page,
        "Array.from(document.querySelectorAll('#products code')).map(e => e.textContent)",
    )
    .await;
    assert_eq!(skus, vec!["LAMP-1".to_string()]);
    screenshot(&page, "catalog").await;
    goto(&page, &format!("{base}/console/system")).await;
    assert_eq!(heading(&page).await, "System");
    screenshot(&page, "system").await;

    // Nothing any page asked for came from outside the engine.
    for url in requests.lock().unwrap().iter() {
        assert!(
            // data: URLs are inline (Chromium's own date-picker icon is one): no network.
            url.starts_with(&base) || url == "about:blank" || url.starts_with("data:"),
            "a console page loaded {url}"
        );
    }
    chrome.close().await;
}

/// A client without redirects or a cookie store: each step says what the browser would do.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A form posted with the session `token`'s cookie (and an `Origin`, as a browser adds).
async fn post_form(
    base: &str,
    token: &str,
    path: &str,
    origin: Option<&str>,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let mut r = http()
        .post(format!("{base}{path}"))
        .header("cookie", format!("emporium_console={token}"));
    if let Some(o) = origin {
        r = r.header("origin", o);
    }
    r.form(form).send().await.unwrap()
}

/// Opens `page` with the session, then posts to `action` with the CSRF token of its forms,
/// as a browser submitting one of them does.
async fn submit(app: &TestApp, token: &str, page: &str, action: &str) -> reqwest::Response {
    let (_, html) = get_page(app, token, page).await;
    post_form(&app.base, token, action, None, &[("csrf", &csrf_of(&html))]).await
}

/// Signs in with `key` and returns the `Set-Cookie` header and the session token.
async fn http_sign_in(app: &TestApp, key: &str) -> (reqwest::StatusCode, Option<(String, String)>) {
    let r = app.console_sign_in(key, None).await;
    let status = r.status();
    let cookie = r
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string())
        .map(|h| {
            let token = h
                .split(';')
                .next()
                .unwrap()
                .trim_start_matches("emporium_console=")
                .to_string();
            (h, token)
        });
    (status, cookie)
}

async fn get_page(app: &TestApp, token: &str, path: &str) -> (reqwest::StatusCode, String) {
    let r = http()
        .get(format!("{}{path}", app.base))
        .header("cookie", format!("emporium_console={token}"))
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

fn csrf_of(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let at = html.find(marker).expect("a form with a CSRF token") + marker.len();
    html[at..at + 64].to_string()
}

async fn key_count(app: &TestApp) -> usize {
    app.state.keys.list().await.unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_sessions_refuse_forged_posts_and_follow_the_api_roles() {
    let app = TestApp::start(Backend::Sqlite, |b| b).await;
    let admin = app.key(Role::Admin, None).await;

    // The session cookie: HttpOnly, SameSite=Strict, scoped to the console, expiring.
    let (status, cookie) = http_sign_in(&app, &admin).await;
    assert_eq!(status, 303);
    let (header, token) = cookie.expect("a session cookie");
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=28800",
    ] {
        assert!(header.contains(attribute), "{header}");
    }
    assert!(!header.contains("Secure"), "plain HTTP: {header}");
    let behind_tls = app
        .console_sign_in(&admin, Some(("x-forwarded-proto", "https")))
        .await;
    let tls_cookie = behind_tls.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(tls_cookie.contains("; Secure"), "{tls_cookie}");

    // A cross-site POST without the CSRF token is refused and changes nothing.
    let before = key_count(&app).await;
    let forged = post_form(
        &app.base,
        &token,
        "/console/system/keys",
        Some("http://evil.example"),
        &[("role", "admin"), ("label", "forged")],
    )
    .await;
    assert_eq!(forged.status(), 403);
    // Nor does a same-site one with a wrong token.
    let wrong = post_form(
        &app.base,
        &token,
        "/console/system/keys",
        None,
        &[
            ("role", "admin"),
            ("label", "forged"),
            ("csrf", &"0".repeat(64)),
        ],
    )
    .await;
    assert_eq!(wrong.status(), 403);
    assert_eq!(key_count(&app).await, before);
    // A forged cross-site sign-in is refused too.
    let login = app
        .console_sign_in(&admin, Some(("origin", "http://evil.example")))
        .await;
    assert_eq!(login.status(), 403);

    // With the page's token, the same form creates the key and shows its secret once.
    let (s, system) = get_page(&app, &token, "/console/system").await;
    assert_eq!(s, 200);
    let csrf = csrf_of(&system);
    let created = post_form(
        &app.base,
        &token,
        "/console/system/keys",
        Some(&app.base),
        &[
            ("role", "analyst"),
            ("label", "made in the console"),
            ("csrf", &csrf),
        ],
    )
    .await;
    assert_eq!(created.status(), 201);
    let html = created.text().await.unwrap();
    let marker = "id=\"new-key-secret\">";
    let at = html.find(marker).unwrap() + marker.len();
    let secret = html[at..].split('<').next().unwrap().to_string();
    assert_eq!(key_count(&app).await, before + 1);
    let (_, again) = get_page(&app, &token, "/console/system").await;
    assert!(!again.contains(&secret), "the secret was shown twice");

    // The new analyst key signs in and sees what analysts see, and nothing else.
    let (_, analyst_cookie) = http_sign_in(&app, &secret).await;
    let analyst_token = analyst_cookie.unwrap().1;
    for (path, expected) in [
        ("/console/overview", 200),
        ("/console/events", 200),
        ("/console/system", 403),
        ("/console/orders", 403),
        ("/console/catalog", 403),
    ] {
        let (s, _) = get_page(&app, &analyst_token, path).await;
        assert_eq!(s.as_u16(), expected, "analyst on {path}");
    }
    // Every role against every page, by the same access rules the API uses.
    for role in [Role::Operator, Role::Analyst, Role::Auditor, Role::Admin] {
        let key = app.key(role, None).await;
        let (s, c) = http_sign_in(&app, &key).await;
        assert_eq!(s, 303, "{role:?} signs in");
        let t = c.unwrap().1;
        for p in emporium_gateway::console::PAGES {
            let (s, _) = get_page(&app, &t, p.path).await;
            let expected = if p.access.allows(role) { 200 } else { 403 };
            assert_eq!(s.as_u16(), expected, "{role:?} on {}", p.path);
        }
    }

    // A rebuild of the search index started from the System page swaps in a new generation,
    // the page showing its progress meanwhile or the new generation after.
    let (_, system) = get_page(&app, &token, "/console/system").await;
    assert!(
        system.contains("<td>search</td><td class=\"num\">1</td>"),
        "{system}"
    );
    let rebuild = submit(
        &app,
        &token,
        "/console/system",
        "/console/system/rebuild-search",
    )
    .await;
    assert_eq!(rebuild.status(), 303);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, page) = get_page(&app, &token, "/console/system").await;
        if page.contains("<td>search</td><td class=\"num\">2</td>") {
            break;
        }
        assert!(
            page.contains("id=\"rebuild-progress\""),
            "neither progress nor the new generation: {page}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the rebuild did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Revoking the key ends its console session at once.
    let key_id = app
        .state
        .keys
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.label == "made in the console")
        .unwrap()
        .key_id;
    let revoke = submit(
        &app,
        &token,
        "/console/system",
        &format!("/console/system/keys/{key_id}/revoke"),
    )
    .await;
    assert_eq!(revoke.status(), 200);
    let (s, _) = get_page(&app, &analyst_token, "/console/overview").await;
    assert_eq!(s, 303, "a revoked key's session still works");

    // Without a session every page sends the browser to sign in; a client key may not sign in.
    for p in emporium_gateway::console::PAGES {
        let (s, _) = get_page(&app, "not-a-session", p.path).await;
        assert_eq!(s, 303, "{}", p.path);
    }
    let client = app.key(Role::Client, Some("c-1")).await;
    let (s, c) = http_sign_in(&app, &client).await;
    assert_eq!(s, 403);
    assert!(c.is_none());

    // Bounds: an oversized key, search text or cursor is a clear 4xx and changes nothing.
    let (s, _) = http_sign_in(&app, &"k".repeat(10_000)).await;
    assert_eq!(s, 422);
    for path in [
        format!("/console/orders?q={}", "x".repeat(200)),
        "/console/orders?status=lost".to_string(),
        "/console/orders?before=garbage".to_string(),
        "/console/events?from=yesterday".to_string(),
        "/console/events/download?format=xlsx".to_string(),
        format!("/console/catalog?q={}", "y".repeat(300)),
        "/console/orders/not-an-order".to_string(),
    ] {
        let (s, body) = get_page(&app, &token, &path).await;
        assert!(s.is_client_error(), "{path}: {s} {body}");
    }

    // Sign-out ends the session on the server, not only in the browser.
    let out = submit(&app, &token, "/console/system", "/console/logout").await;
    assert_eq!(out.status(), 303);
    let (s, _) = get_page(&app, &token, "/console/system").await;
    assert_eq!(s, 303);
}

/// Two engines on one database: a session started on one is honoured by the other (a load
/// balancer may send the next request anywhere), and signing out on either ends it on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_session_is_the_same_on_every_engine() {
    let app = TestApp::start(Backend::Postgres, |b| b).await;
    let other = emporium_gateway::Engine::on_store(app.store.clone())
        .admin_key(Some(ADMIN_KEY.to_string()))
        .run_checkout(false)
        .run_projections(false)
        .start()
        .await
        .expect("a second engine");
    let auditor = app.key(Role::Auditor, None).await;
    let (_, cookie) = http_sign_in(&app, &auditor).await;
    let token = cookie.expect("a session").1;
    let on = |base: String, path: &'static str| {
        let token = token.clone();
        async move {
            let r = http()
                .get(format!("{base}{path}"))
                .header("cookie", format!("emporium_console={token}"))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(on(app.base.clone(), "/console/events").await.0, 200);
    let (status, page) = on(other.url(), "/console/events").await;
    assert_eq!(status, 200);
    assert_eq!(on(other.url(), "/console/system").await.0, 403);
    // Sign out on the second engine; the first refuses the session from then on.
    let out = post_form(
        &other.url(),
        &token,
        "/console/logout",
        None,
        &[("csrf", &csrf_of(&page))],
    )
    .await;
    assert_eq!(out.status(), 303);
    assert_eq!(on(app.base.clone(), "/console/events").await.0, 303);
    other.stop().await;
}
