//! OSCORE context re-derivation (RFC 8613 Appendix B.2) from the command line: `tern get
//! --oscore DIR --oscore-rederivation` against `tern serve --oscore DIR --oscore-rederivation`.
//! No other peer implements the appendix here (aiocoap does not; libcoap 4.3.1 as packaged
//! has no OSCORE), so both ends are Tern's, each with its own aiocoap-format folder:
//!
//! - `--oscore-rederive` makes the client start one;
//! - a restarted server, its replay window unknown (folders do not store it), answers the
//!   first request by starting a re-derivation, which the client follows;
//! - both keep the new context in `rederived.json` across restarts;
//! - the flags without a context, and a client without the flag, fail with a clear message.

mod common;

use std::path::Path;

use common::{start_tern_server_with, tern};

const SECRET: &str =
    r#"{"secret_hex": "0102030405060708090a0b0c0d0e0f10", "salt_hex": "9e7ca92223786340"}"#;

fn write_context(dir: &Path, sender: &str, recipient: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("secret.json"), SECRET).unwrap();
    std::fs::write(
        dir.join("settings.json"),
        format!(r#"{{"sender-id_hex": "{sender}", "recipient-id_hex": "{recipient}"}}"#),
    )
    .unwrap();
}

fn id_context(dir: &Path) -> String {
    // {"id-context_hex": "…", …}, as Tern writes it.
    let text = std::fs::read_to_string(dir.join("rederived.json")).unwrap();
    let start = text.find("\"id-context_hex\": \"").unwrap() + 19;
    let end = start + text[start..].find('"').unwrap();
    text[start..end].to_string()
}

#[test]
fn tern_client_and_server_rederive_and_keep_the_context() {
    let base = std::env::temp_dir().join(format!("tern-rederive-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (client, server) = (base.join("client"), base.join("server"));
    write_context(&client, "01", "");
    write_context(&server, "", "01");
    let serve_args = [
        "--oscore",
        server.to_str().unwrap(),
        "--oscore-rederivation",
    ];
    let (mut serving, addr) = start_tern_server_with(&serve_args);
    let whoami = format!("coap://{addr}/whoami");
    let get = |extra: &[&str]| {
        let mut args = vec!["get", "--oscore", client.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.push(&whoami);
        tern(args)
    };

    // A new folder's replay window is empty, not unknown: an ordinary exchange.
    let out = get(&["--oscore-rederivation"]);
    assert!(out.success(), "{}\n{}", out.describe(), serving.output());
    assert_eq!(out.stdout.trim(), "oscore:01", "{}", out.describe());
    assert!(!client.join("rederived.json").exists());

    // The client starts a re-derivation.
    let out = get(&["--oscore-rederive"]);
    assert!(out.success(), "{}\n{}", out.describe(), serving.output());
    assert_eq!(out.stdout.trim(), "oscore:01", "{}", out.describe());
    let second = id_context(&client);
    assert_eq!(second.len(), 32, "R2 | R3");
    assert_eq!(id_context(&server), second);

    // Without re-derivation the client still uses the stored context, which the running
    // server knows.
    let out = get(&[]);
    assert!(out.success(), "{}\n{}", out.describe(), serving.output());
    assert_eq!(id_context(&client), second);

    // After a restart the server loads the re-derived context; its replay window is unknown
    // again, so a client without the flag cannot follow the re-derivation it starts...
    serving.kill();
    let (mut serving, addr2) = start_tern_server_with(&serve_args);
    let whoami2 = format!("coap://{addr2}/whoami");
    let out = tern(["get", "--oscore", client.to_str().unwrap(), &whoami2]);
    assert!(!out.success(), "{}", out.describe());
    assert!(
        out.all_output().contains("re-derivation"),
        "{}",
        out.describe()
    );
    // ...and one with it can.
    let out = tern([
        "get",
        "--oscore",
        client.to_str().unwrap(),
        "--oscore-rederivation",
        &whoami2,
    ]);
    assert!(out.success(), "{}\n{}", out.describe(), serving.output());
    assert_eq!(out.stdout.trim(), "oscore:01");
    assert_ne!(id_context(&client), second, "the server re-derived");
    assert_eq!(id_context(&server), id_context(&client));
    serving.kill();

    // The flags need a context.
    let out = tern(["get", "--oscore-rederive", &whoami]);
    assert!(!out.success());
    assert!(
        out.all_output().contains("need an OSCORE context"),
        "{}",
        out.describe()
    );
    let _ = std::fs::remove_dir_all(&base);
}
