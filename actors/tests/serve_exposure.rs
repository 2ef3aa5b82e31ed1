//! `tollgate serve` refuses, at startup and with a message that says what to do, to open the
//! admin API to the network without an admin token.

use std::process::Command;

#[test]
fn serve_without_a_token_refuses_a_non_loopback_address() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--data-dir")
        .arg(dir.path())
        .arg("serve")
        .env("TOLLGATE_HTTP_ADDR", "0.0.0.0:0")
        .env_remove("TOLLGATE_ADMIN_TOKEN")
        .env_remove("TOLLGATE_BACKEND")
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve must not start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to serve the admin API on 0.0.0.0:0 without an admin token"), "{stderr}");
    assert!(stderr.contains("TOLLGATE_ADMIN_TOKEN"), "{stderr}");
}
