//! The web dashboard: its files are served without a key, and an end-to-end browser test in
//! headless Chromium (Playwright, `crates/ignis/tests/ui/dashboard.mjs`) logs in with a key,
//! opens the function list, invokes a function from the JSON editor and sees the activation
//! and its logs, saving a screenshot of each page under `target/ui-screenshots/`.
//!
//! Needs Debian's `chromium` and `npm ci` in `crates/ignis/tests/ui`; skipped with a message
//! without them, unless `IGNIS_REQUIRE_SANDBOX=1` (CI), where that is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::*;

const GREETER: &str = "def handler(event, context):\n    name = event.get('name', 'world')\n    print('greeting', name)\n    if name == 'error':\n        raise ValueError('no such person')\n    return {'message': f'Hello, {name}!'}\n";

#[test]
fn the_dashboard_files_are_served_without_a_key() {
    let s = Server::start();
    for (path, ty) in [
        ("/ui", "text/html"),
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        let r = s.raw_request("GET", path, &[], None, b"");
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("content-type").unwrap().starts_with(ty), "{path}");
        assert!(r.header("content-security-policy").is_some(), "{path}");
    }
    let r = s.raw_request("GET", "/ui/secrets.txt", &[], None, b"");
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
}

fn chromium() -> Option<PathBuf> {
    std::env::var_os("IGNIS_CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain(["/usr/bin/chromium", "/usr/bin/chromium-browser"].map(PathBuf::from))
        .find(|p| p.is_file())
}

/// Why the browser test cannot run here, if it cannot.
fn missing(ui_dir: &Path) -> Option<String> {
    if chromium().is_none() {
        return Some("no chromium (apt-get install chromium)".into());
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("no node".into());
    }
    if !ui_dir.join("node_modules/playwright-core").is_dir() {
        return Some(format!(
            "no playwright-core (cd {} && npm ci)",
            ui_dir.display()
        ));
    }
    None
}

#[test]
fn the_dashboard_in_headless_chromium() {
    let ui_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    if let Some(why) = missing(&ui_dir) {
        assert!(
            std::env::var("IGNIS_REQUIRE_SANDBOX").as_deref() != Ok("1"),
            "the browser test cannot run: {why}"
        );
        eprintln!("skipping the browser test: {why}");
        return;
    }
    let s = Server::start();
    let r = s.deploy_file(
        "greeter",
        "runtime=python&handler=app.handler",
        "app.py",
        GREETER,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    // Something for the charts: a few invocations, one of them failing.
    for name in ["Grace", "Linus", "error", "Barbara"] {
        s.invoke("greeter", &format!(r#"{{"name": "{name}"}}"#));
    }
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("node")
        .arg(ui_dir.join("dashboard.mjs"))
        .current_dir(&ui_dir)
        .env("IGNIS_URL", &s.url)
        .env("IGNIS_KEY", &s.key)
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", chromium().unwrap())
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "browser test failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for page in ["login", "functions", "function", "usage", "instances"] {
        let shot = shots.join(format!("{page}.png"));
        let len = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
        assert!(len > 1000, "no screenshot {}", shot.display());
    }
}
