//! `tollgate connections add|list|test|remove` through the real binary, against a local HTTP
//! API that takes basic auth: the password is read from stdin, never listed nor readable in the
//! data directory; `test` passes with the right password and fails clearly with a wrong one;
//! bad settings are refused with their names.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const PASSWORD: &str = "GECKO-PASSWORD-3307";

fn tollgate(data: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("TOLLGATE_BACKEND")
        .env("TOLLGATE_EGRESS_ALLOW", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// An API that answers 200 to `Basic svc:GECKO-PASSWORD-3307` and 401 to anything else.
fn api() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = axum::Router::new().fallback(|headers: axum::http::HeaderMap| async move {
                // base64("svc:GECKO-PASSWORD-3307")
                let good = headers.get("authorization").and_then(|v| v.to_str().ok())
                    == Some("Basic c3ZjOkdFQ0tPLVBBU1NXT1JELTMzMDc=");
                if good { axum::http::StatusCode::OK } else { axum::http::StatusCode::UNAUTHORIZED }
            });
            axum::serve(listener, app).await.unwrap();
        });
    });
    port
}

#[test]
fn connections_are_added_listed_tested_and_their_credential_stays_sealed() {
    let port = api();
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let base = format!("base_url=http://127.0.0.1:{port}/v1");
    let add = |name: &str, password: &str| {
        tollgate(
            d,
            &[
                "connections",
                "add",
                name,
                "--kind",
                "http",
                "--owner",
                "ops",
                "--set",
                &base,
                "--set",
                "auth=basic",
                "--set",
                "user=svc",
            ],
            password,
        )
    };

    let out = add("crm", &format!("{PASSWORD}\n"));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("its password sealed in the secret store"), "{}", text(&out));
    let out = add("crm_wrong", "not-the-password");
    assert!(out.status.success(), "{}", text(&out));

    let out = tollgate(d, &["connections", "list", "--owner", "ops"], "");
    let listed = text(&out);
    assert!(out.status.success(), "{listed}");
    assert!(
        listed.contains("crm ")
            && listed.contains("auth=basic")
            && listed.contains("user=svc")
            && listed.contains("stored"),
        "{listed}"
    );
    assert!(!listed.contains(PASSWORD) && !listed.contains("not-the-password"), "list shows a credential: {listed}");

    let out = tollgate(d, &["connections", "test", "crm", "--owner", "ops"], "");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "connection `crm`: ok — http http://127.0.0.1:{port}/v1: GET answered HTTP 200 OK (basic auth)"
        )),
        "{}",
        text(&out)
    );
    let out = tollgate(d, &["connections", "test", "crm_wrong", "--owner", "ops"], "");
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "tollgate: connection `crm_wrong` failed its test: GET http://127.0.0.1:{port}/v1 answered HTTP 401 Unauthorized to the credentials of connection `crm_wrong` (basic auth)"
        )
    );

    // A credential is required on stdin; bad settings are named.
    let out = add("crm2", "");
    assert!(!out.status.success());
    assert!(text(&out).contains("connection `crm2` needs its password on stdin"), "{}", text(&out));
    let out =
        tollgate(d, &["connections", "add", "mail", "--kind", "smtp", "--set", "hots=x", "--set", "from=ops"], "");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = text(&out);
    assert!(
        err.contains("host: an smtp connection needs the server's host name")
            && err.contains("hots: is not a setting of an smtp connection")
            && err.contains("from: `ops` is not an email address"),
        "{err}"
    );

    let out = tollgate(d, &["connections", "remove", "crm_wrong", "--owner", "ops"], "");
    assert!(out.status.success(), "{}", text(&out));
    for entry in std::fs::read_dir(d).unwrap() {
        let path = entry.unwrap().path();
        let Ok(bytes) = std::fs::read(&path) else { continue };
        assert!(
            !bytes.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()),
            "{} holds the password",
            path.display()
        );
    }
}
