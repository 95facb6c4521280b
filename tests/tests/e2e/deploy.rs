//! What users deploy with: docker-compose.yml and the Dockerfile. No Docker engine runs
//! here, so these check the files themselves for the faults the issue 11 review found.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn read(file: &str) -> String {
    std::fs::read_to_string(workspace().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// "1.89" or "1.89.0" as (1, 89).
fn minor_version(v: &str) -> (u32, u32) {
    let mut parts = v.trim().split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[test]
fn compose_ships_no_working_admin_key() {
    let compose = read("docker-compose.yml");
    let line = compose
        .lines()
        .find(|l| l.trim_start().starts_with("EMPORIUM_ADMIN_KEY:"))
        .expect("the engine's admin key setting");
    let value = line.split_once(':').unwrap().1.trim();
    // `${EMPORIUM_ADMIN_KEY:-}` passes the operator's key through, or nothing.
    let default = value
        .strip_prefix("${EMPORIUM_ADMIN_KEY")
        .and_then(|r| r.strip_suffix('}'))
        .unwrap_or_else(|| panic!("the key comes from the operator's environment: {value}"));
    let default = default.trim_start_matches(":-").trim_start_matches('-');
    assert!(
        default.is_empty(),
        "docker-compose.yml must not ship a default admin key, found {default:?}"
    );
}

#[test]
fn compose_healthchecks_use_tools_their_images_have() {
    let compose = read("docker-compose.yml");
    // Per service: its image and its healthcheck command.
    let mut services: Vec<(String, String)> = Vec::new();
    let mut image = String::new();
    for line in compose.lines() {
        let t = line.trim();
        if let Some(i) = t.strip_prefix("image:") {
            image = i.trim().to_string();
        }
        if let Some(test) = t.strip_prefix("test:") {
            services.push((image.clone(), test.trim().to_string()));
        }
    }
    let nats = services
        .iter()
        .find(|(i, _)| i.starts_with("nats:"))
        .expect("a NATS service with a healthcheck");
    // The official nats image is built from scratch: no shell, no wget, no curl.
    let scratch = !nats.0.contains("alpine");
    let needs_tools = ["wget", "curl", "CMD-SHELL"]
        .iter()
        .any(|t| nats.1.contains(t));
    assert!(
        !(scratch && needs_tools),
        "the NATS healthcheck {} cannot run in {}",
        nats.1,
        nats.0
    );
}

#[test]
fn the_docker_builder_and_rust_version_are_new_enough_for_every_dependency() {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--filter-platform",
            "x86_64-unknown-linux-gnu",
        ])
        .current_dir(workspace())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let resolved: std::collections::HashSet<&str> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    let (needed, by) = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| resolved.contains(p["id"].as_str().unwrap_or_default()))
        .filter(|p| p["source"].is_string())
        .filter_map(|p| {
            let v = p["rust_version"].as_str()?;
            Some((
                minor_version(v),
                p["name"].as_str().unwrap_or("?").to_string(),
            ))
        })
        .max()
        .expect("dependencies declare rust versions");

    let dockerfile = read("Dockerfile");
    let builder = dockerfile
        .lines()
        .find_map(|l| l.trim().strip_prefix("FROM rust:"))
        .expect("a rust builder stage");
    let builder = minor_version(builder.split('-').next().unwrap_or_default());
    assert!(
        builder >= needed,
        "the Dockerfile builds with rust {builder:?}, but {by} needs {needed:?}"
    );

    let manifest = read("Cargo.toml");
    let declared = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("rust-version = "))
        .expect("the workspace declares a rust-version")
        .trim_matches('"');
    assert!(
        minor_version(declared) >= needed,
        "the workspace declares rust-version {declared}, but {by} needs {needed:?}"
    );
}
