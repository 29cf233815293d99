//! The `piazza` binary as a new user meets it, without a running chain: errors, pipes, default
//! paths, passwords and logs. Each test runs the binary for a few seconds at most.

use std::path::Path;
use std::process::{Command, Output, Stdio};

const PIAZZA: &str = env!("CARGO_BIN_EXE_piazza");
/// A port nothing listens on, so client commands fail at their first RPC.
const NO_NODE: &str = "http://127.0.0.1:1";

/// `piazza ARGS` with a clean environment whose home is `home`.
fn piazza(home: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(PIAZZA);
    command
        .args(args)
        .env("PIAZZA_HOME", home)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    for name in [
        "PIAZZA_KEYSTORE",
        "PIAZZA_PASSWORD",
        "PIAZZA_PASSWORD_FILE",
        "PIAZZA_NODE",
        "PIAZZA_DATA_DIR",
        "PIAZZA_CONFIG",
        "PIAZZA_GATEWAY_DIR",
        "RUST_LIB_BACKTRACE",
        "NO_COLOR",
    ] {
        command.env_remove(name);
    }
    command
}

fn run(mut command: impl std::borrow::BorrowMut<Command>) -> Output {
    command.borrow_mut().output().expect("piazza runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Creates the devnet's keys under `home` (a devnet that stops right after: no such model).
fn devnet_keys(home: &Path) -> Output {
    let output =
        run(piazza(home, &["devnet", "--models", "no-such-model"]).env("RUST_LOG", "info"));
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    output
}

#[test]
fn a_users_mistake_is_one_line_even_with_backtraces_on() {
    let home = tempfile::tempdir().unwrap();
    let output = run(piazza(home.path(), &["keys", "show", "nobody"]).env("RUST_BACKTRACE", "1"));
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("error: no key named `nobody`"), "{text}");
}

#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    let home = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = run(piazza(home.path(), &["keys", "list", "--json"])
        .stdout(writer)
        .stderr(Stdio::piped()));
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stderr(&output), "");
}

#[test]
fn an_oversized_input_cites_the_input_limit() {
    let home = tempfile::tempdir().unwrap();
    let input = "x".repeat(100 * 1024);
    let output = run(piazza(
        home.path(),
        &[
            "job", "submit", "--model", "m", "--input", &input, "--from", "dev", "--node", NO_NODE,
        ],
    ));
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text.contains("102400 bytes") && text.contains("at most 16384 bytes"),
        "{text}"
    );
}

#[test]
fn the_devnets_home_is_every_commands_home_and_its_logs_are_plain() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let devnet = devnet_keys(home);
    let log = stderr(&devnet);
    assert!(log.contains("created devnet key"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file: {log:?}"
    );
    assert!(
        log.lines()
            .last()
            .unwrap()
            .starts_with("error: no bundled model"),
        "{log}"
    );

    // Client commands find the devnet's keystore with no variable set.
    let keys = run(piazza(home, &["keys", "list", "--json"]));
    let keys: serde_json::Value = serde_json::from_slice(&keys.stdout).unwrap();
    let names: Vec<&str> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["auditor", "dev", "models", "provider", "validator"]);

    // API keys land where the devnet's gateway reads them: DATA_DIR/gateway.
    let api_key = run(piazza(
        home,
        &[
            "gateway",
            "key",
            "create",
            "--from",
            "dev",
            "--spend-limit",
            "1",
        ],
    ));
    assert!(api_key.status.success(), "{}", stderr(&api_key));
    assert!(home.join("devnet/gateway").is_dir());
    assert!(!home.join("gateway").exists());
}

#[test]
fn a_key_with_a_password_and_the_devnets_keys_share_one_keystore() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    devnet_keys(home);
    assert!(home.join("devnet/keys/dev.password").is_file());

    let created =
        run(piazza(home, &["keys", "new", "bob", "--json"]).env("PIAZZA_PASSWORD", "bob's"));
    assert!(created.status.success(), "{}", stderr(&created));
    let bob: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    assert!(bob["key"]["address"].as_str().unwrap().starts_with("pz1"));

    // With bob's password in the environment, `dev` still unlocks (its password file wins): the
    // command gets as far as the node.
    let to = bob["key"]["address"].as_str().unwrap();
    let send = |from: &str, password: &str| {
        let output = run(piazza(
            home,
            &[
                "send", "--from", from, "--to", to, "--amount", "1", "--node", NO_NODE,
            ],
        )
        .env("PIAZZA_PASSWORD", password));
        assert_eq!(output.status.code(), Some(1));
        stderr(&output)
    };
    for (from, password) in [("dev", "bob's"), ("bob", "bob's")] {
        let error = send(from, password);
        assert!(!error.contains("password"), "{from}: {error}");
        assert!(error.contains("127.0.0.1:1"), "{from}: {error}");
    }
    let wrong = send("bob", "not bob's");
    assert!(
        wrong.contains("wrong password") && wrong.contains("PIAZZA_PASSWORD"),
        "{wrong}"
    );

    // A password file for one command.
    let file = home.join("bob.txt");
    std::fs::write(&file, "bob's\n").unwrap();
    let output = run(piazza(
        home,
        &[
            "send",
            "--from",
            "bob",
            "--to",
            to,
            "--amount",
            "1",
            "--node",
            NO_NODE,
            "--password-file",
        ],
    )
    .arg(&file));
    assert!(!stderr(&output).contains("password"), "{}", stderr(&output));
}

/// A node of chain `chain_id` that answers every JSON-RPC call with its status, on 127.0.0.1.
fn status_only_node(chain_id: &'static str) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream);
            let mut length = 0usize;
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length.min(1 << 20)];
            let _ = reader.read_exact(&mut body);
            let answer = serde_json::json!({"jsonrpc": "2.0", "id": 0, "result": {
                "chain_id": chain_id, "height": 1, "block_hash": "00", "state_root": "00",
                "time_ms": 0, "mempool_size": 0, "validator": "pz1v"}})
            .to_string();
            let _ = write!(
                reader.get_mut(),
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    url
}

#[test]
fn a_missing_from_means_dev_on_the_devnet_only() {
    let home = tempfile::tempdir().unwrap();
    devnet_keys(home.path());
    let send = |node: &str| {
        let output = run(piazza(
            home.path(),
            &["send", "--to", "dev", "--amount", "1", "--node", node],
        ));
        assert_eq!(output.status.code(), Some(1));
        stderr(&output)
    };
    let elsewhere = send(&status_only_node("piazza-testnet"));
    assert!(
        elsewhere.contains("--from KEY is required") && elsewhere.contains("piazza-testnet"),
        "{elsewhere}"
    );
    // On the devnet, `dev` signs: the command gets past the key to building the transaction
    // (which this node cannot answer).
    let devnet = send(&status_only_node("piazza-devnet"));
    assert!(!devnet.contains("--from"), "{devnet}");
}
