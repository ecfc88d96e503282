//! The SLO page in a real browser: Debian's chromium, headless, loads `/` against a broker
//! with a scripted fleet (two in service, one silent, one faulted). The figures on the
//! page must equal `/api/v1/slo`; the Japanese page must be Japanese; the browser console
//! must stay free of errors; a screenshot is saved (CARGO_TARGET_TMPDIR/slo-page.png).

use std::process::{Command, Stdio};
use std::time::Duration;

use fleet_broker::Broker;
use fleet_tests::{http_get as get, start, test_config, WAIT};
use serde_json::Value;
use sim_device::{Vehicle, VehicleOptions};

/// The chromium binary, if installed; under CI its absence is a failure.
fn chromium() -> Option<&'static str> {
    for name in ["chromium", "chromium-browser"] {
        let found = Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return Some(name);
        }
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "chromium must be installed in CI"
    );
    eprintln!("chromium not installed: skipping (apt-get install chromium)");
    None
}

/// Runs headless chromium with `args` on `url`: (stdout, stderr).
fn browse(browser: &str, args: &[&str], url: &str) -> (String, String) {
    let dir = tempfile::tempdir().expect("profile dir");
    let out = Command::new("timeout")
        .arg("60")
        .arg(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", dir.path().display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(out.status.success(), "chromium failed: {out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn slo(broker: &Broker) -> Value {
    let (status, body) = get(broker, "/api/v1/slo", "").await;
    assert_eq!(status, 200);
    serde_json::from_str(&body).expect("JSON")
}

/// The text of the first element with `data-metric="key"` in `dom`.
fn metric(dom: &str, key: &str) -> String {
    let marker = format!("data-metric=\"{key}\"");
    let at = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no {key} on the page"));
    let rest = &dom[at..];
    let start = rest.find('>').expect("tag end") + 1;
    let end = rest[start..].find('<').expect("text end") + start;
    rest[start..end].trim().to_owned()
}

fn pct(v: &Value, digits: usize) -> String {
    format!(
        "{:.*}",
        digits,
        v.as_f64().expect("number").max(0.0) * 100.0
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slo_page_shows_what_the_api_says_in_english_and_japanese() {
    let Some(browser) = chromium() else {
        return;
    };
    let broker = start(&test_config(
        "[heartbeat]\ntimeout = \"2s\"\n[faults.codes.BRAKE_SENSOR]\nthreshold = 1\nwindow = \"1m\"\n",
    ))
    .await;
    let addr = broker.mqtt_addr();
    let mut fleet = Vec::new();
    for id in ["ok-1", "ok-2", "silent-1", "faulty-1"] {
        let v = Vehicle::connect(addr, id, VehicleOptions::default())
            .await
            .expect("vehicle connects");
        v.heartbeat().await.expect("heartbeat");
        fleet.push(v);
    }
    fleet[3].error("BRAKE_SENSOR", 1).await.expect("error");
    let silent = fleet.remove(2);
    drop(silent);
    // The healthy ones keep talking.
    let talking = tokio::spawn(async move {
        loop {
            for v in &fleet {
                let _ = v.heartbeat().await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    tokio::time::timeout(3 * WAIT, async {
        loop {
            let j = slo(&broker).await;
            if j["vehicles"]["out_of_service"] == 2 && j["vehicles"]["heartbeat_lost"] == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("one silent and one faulted vehicle out of service");

    let url = format!("http://{}/", broker.http_addr());
    let before = slo(&broker).await;
    let (dom, log) = browse(browser, &["--dump-dom", "--virtual-time-budget=3000"], &url);
    let after = slo(&broker).await;

    // The census is settled: exactly the API's.
    for key in [
        "in_service",
        "total",
        "out_of_service",
        "heartbeat_lost",
        "hardware_fault",
        "maintenance",
        "held",
    ] {
        assert_eq!(
            metric(&dom, key),
            after["vehicles"][key].to_string(),
            "{key} on the page"
        );
    }
    let f = |j: &Value, k: &str| j["fleet_in_service"][k].clone();
    assert_eq!(metric(&dom, "target"), pct(&f(&after, "target"), 2));
    // Vehicle-time accrues between the two API reads: the page's figure lies between them.
    for (key, digits) in [
        ("window_sli", 2),
        ("error_budget_remaining", 0),
        ("sli_now", 2),
    ] {
        let shown: f64 = metric(&dom, key).parse().expect("a number");
        let (a, b) = (pct(&f(&before, key), digits), pct(&f(&after, key), digits));
        let (a, b): (f64, f64) = (a.parse().expect("n"), b.parse().expect("n"));
        assert!(
            (a.min(b)..=a.max(b)).contains(&shown),
            "{key}: page {shown}, API {a} .. {b}"
        );
    }
    assert_eq!(metric(&dom, "in_service"), "2");
    // The most common fault, as the API counts it.
    let top = &after["vehicles"]["by_fault_code"][0];
    assert_eq!(top["code"], "BRAKE_SENSOR");
    let faults = dom
        .split("data-testid=\"fault-codes\"")
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .expect("the fault-code table");
    assert!(
        faults.contains("<td>BRAKE_SENSOR</td>")
            && faults.contains(&format!(">{}</td>", top["vehicles"])),
        "{faults}"
    );
    // The figures above are the refresh script's (it ran at load and set the mark).
    assert!(dom.contains("data-refreshed=\""), "the refresh script ran");
    assert!(dom.contains("lang=\"en\""), "English by default");
    assert!(dom.contains("data-testid=\"verdict\""));
    assert!(dom.contains("Glossary") && dom.contains("Error budget"));
    let console: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(console.is_empty(), "browser console: {console:?}");

    // Japanese, by the query and by the browser's language.
    let (dom_ja, log_ja) = browse(browser, &["--dump-dom"], &format!("{url}?lang=ja"));
    assert!(dom_ja.contains("<html lang=\"ja\""), "lang attribute");
    assert!(
        dom_ja.contains("目標") && dom_ja.contains("用語"),
        "Japanese text"
    );
    assert!(!dom_ja.contains("Glossary"));
    assert!(!log_ja.contains("Uncaught"), "{log_ja}");
    let (status, body) = get(&broker, "/", "Accept-Language: ja-JP,ja;q=0.9,en;q=0.5\r\n").await;
    assert_eq!(status, 200);
    assert!(body.contains("<html lang=\"ja\""));

    // The technicians' pages.
    let (status, list) = get(&broker, "/vehicles?state=out_of_service", "").await;
    assert_eq!(status, 200);
    assert!(list.contains("silent-1") && list.contains("faulty-1") && !list.contains(">ok-1<"));
    let (status, one) = get(&broker, "/vehicles/faulty-1", "").await;
    assert_eq!(status, 200);
    assert!(one.contains("BRAKE_SENSOR"));
    let (status, _) = get(&broker, "/vehicles/nobody", "").await;
    assert_eq!(status, 404);

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("slo-page.png");
    let shot_arg = format!("--screenshot={}", shot.display());
    browse(
        browser,
        &[&shot_arg, "--window-size=1000,2200", "--hide-scrollbars"],
        &url,
    );
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000),
        "screenshot saved at {}",
        shot.display()
    );
    talking.abort();
    broker.shutdown().await;
}

#[tokio::test]
async fn the_page_can_be_turned_off() {
    let broker = start(&test_config("[http]\npage = false\n")).await;
    assert_eq!(get(&broker, "/", "").await.0, 404);
    assert_eq!(get(&broker, "/api/v1/slo", "").await.0, 200);
    broker.shutdown().await;
}
