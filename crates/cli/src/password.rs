//! Key passwords: which one unlocks a key, and asking for one on a terminal.
//!
//! To unlock key NAME the first of these is used: `--password-file` (or
//! `PIAZZA_PASSWORD_FILE`); the keystore's `NAME.password` (the devnet writes one for each key
//! it seals with the empty password); `PIAZZA_PASSWORD`; a prompt when standard input is a
//! terminal; the empty password. So `bob`, sealed with a password, and the devnet's `dev` work
//! side by side in one keystore.

use anyhow::{Context, Result};
use piazza_keystore::{Keystore, KeystoreError};
use piazza_primitives::SecretKey;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

pub const PASSWORD_ENV: &str = "PIAZZA_PASSWORD";
/// Longest password read from a terminal.
const PROMPT_BYTES_MAX: u64 = 1024;

/// Where a password may come from, besides the keystore's own password files.
pub struct Sources {
    /// `--password-file` / `PIAZZA_PASSWORD_FILE`.
    pub file: Option<PathBuf>,
    /// `PIAZZA_PASSWORD`.
    pub env: Option<String>,
    /// Whether asking on the terminal is possible (standard input is one).
    pub terminal: bool,
}

impl Sources {
    /// The sources of this process: the given file, the environment, the terminal.
    pub fn of_process(file: Option<&Path>) -> Sources {
        Sources {
            file: file.map(Path::to_path_buf),
            env: std::env::var(PASSWORD_ENV).ok(),
            terminal: std::io::stdin().is_terminal(),
        }
    }
}

/// The password that should unlock key `name`, and where it came from.
pub fn for_key(keystore: &Keystore, name: &str, sources: &Sources) -> Result<(String, Origin)> {
    if let Some(file) = &sources.file {
        return Ok((
            piazza_keystore::read_password_file(file)?,
            Origin::File(file.clone()),
        ));
    }
    if let Some(stored) = keystore.stored_password(name)? {
        return Ok((stored, Origin::Stored));
    }
    if let Some(password) = &sources.env {
        return Ok((password.clone(), Origin::Env));
    }
    if sources.terminal {
        return Ok((
            prompt(&format!("password for key `{name}`: "))?,
            Origin::Prompt,
        ));
    }
    Ok((String::new(), Origin::Empty))
}

/// Where a password came from (for the error a wrong one gives).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    Stored,
    Env,
    Prompt,
    Empty,
}

/// Unlocks key `name`; a wrong password's error says where the password came from.
pub fn unlock(keystore: &Keystore, name: &str, file: Option<&Path>) -> Result<SecretKey> {
    let (password, origin) = for_key(keystore, name, &Sources::of_process(file))?;
    keystore.unlock(name, &password).map_err(|error| {
        let hint = match (&error, &origin) {
            (KeystoreError::NotFound(_), _) => format!(
                " in keystore {} (choose one with --keystore or PIAZZA_KEYSTORE)",
                keystore.dir().display()
            ),
            (KeystoreError::WrongPassword(_), Origin::File(path)) => {
                format!("; the password came from {}", path.display())
            }
            (KeystoreError::WrongPassword(_), Origin::Stored) => format!(
                "; the password came from {}",
                keystore
                    .password_path(name)
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
            (KeystoreError::WrongPassword(_), Origin::Env) => {
                format!("; the password came from {PASSWORD_ENV} (a key with another password takes --password-file or KEYSTORE/{name}.password)")
            }
            (KeystoreError::WrongPassword(_), Origin::Empty) => format!(
                "; no password was given: set {PASSWORD_ENV}, pass --password-file, or run on a terminal to be asked"
            ),
            _ => String::new(),
        };
        anyhow::anyhow!("{error}{hint}")
    })
}

/// The password to seal a new key with: the file, `PIAZZA_PASSWORD`, asked twice on a terminal,
/// or (with a warning) empty.
pub fn for_new_key(name: &str, sources: &Sources) -> Result<String> {
    if let Some(file) = &sources.file {
        return Ok(piazza_keystore::read_password_file(file)?);
    }
    if let Some(password) = &sources.env {
        return Ok(password.clone());
    }
    if sources.terminal {
        let first = prompt(&format!("new password for key `{name}`: "))?;
        let second = prompt("the same password again: ")?;
        anyhow::ensure!(first == second, "the passwords differ; no key was created");
        return Ok(first);
    }
    eprintln!(
        "warning: no password given ({PASSWORD_ENV}, --password-file or a terminal); the key is sealed with an empty password"
    );
    Ok(String::new())
}

/// Reads one line from the terminal with echo off.
#[cfg(unix)]
fn prompt(label: &str) -> Result<String> {
    use std::io::{BufRead, Read, Write};
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("opening the terminal to ask for a password")?;
    let echo = EchoOff::new(&tty)?;
    write!(tty, "{label}")?;
    tty.flush()?;
    let mut line = String::new();
    std::io::BufReader::new((&tty).take(PROMPT_BYTES_MAX))
        .read_line(&mut line)
        .context("reading the password from the terminal")?;
    drop(echo);
    writeln!(tty)?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    Ok(password.strip_suffix('\r').unwrap_or(password).to_string())
}

#[cfg(not(unix))]
fn prompt(label: &str) -> Result<String> {
    use std::io::{BufRead, Read, Write};
    eprint!("{label}(shown as typed) ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .take(PROMPT_BYTES_MAX)
        .read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// The terminal's echo turned off until dropped (through `stty`, so no terminal library is
/// linked for one prompt).
#[cfg(unix)]
struct EchoOff {
    tty: std::fs::File,
    saved: String,
}

#[cfg(unix)]
impl EchoOff {
    fn new(tty: &std::fs::File) -> Result<EchoOff> {
        let tty = tty.try_clone()?;
        let saved = stty(&tty, &["-g"])?;
        stty(&tty, &["-echo"])?;
        Ok(EchoOff {
            tty,
            saved: saved.trim().to_string(),
        })
    }
}

#[cfg(unix)]
impl Drop for EchoOff {
    fn drop(&mut self) {
        let _ = stty(&self.tty, &[self.saved.as_str()]);
    }
}

#[cfg(unix)]
fn stty(tty: &std::fs::File, args: &[&str]) -> Result<String> {
    let output = std::process::Command::new("stty")
        .args(args)
        .stdin(tty.try_clone()?)
        .stderr(std::process::Stdio::null())
        .output()
        .context("running stty to hide the password")?;
    anyhow::ensure!(output.status.success(), "stty {args:?} failed");
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(file: Option<PathBuf>, env: Option<&str>) -> Sources {
        Sources {
            file,
            env: env.map(str::to_string),
            terminal: false,
        }
    }

    #[test]
    fn each_key_gets_its_own_password() {
        let dir = tempfile::tempdir().unwrap();
        let keystore = Keystore::open(&dir.path().join("keys")).unwrap();
        keystore.create("dev", "").unwrap();
        keystore.store_password("dev", "").unwrap();
        keystore.create("bob", "bob's").unwrap();

        // PIAZZA_PASSWORD set for bob does not break dev, whose password file wins.
        let env = sources(None, Some("bob's"));
        let (dev, origin) = for_key(&keystore, "dev", &env).unwrap();
        assert_eq!((dev.as_str(), origin), ("", Origin::Stored));
        assert!(keystore.unlock("dev", &dev).is_ok());
        let (bob, origin) = for_key(&keystore, "bob", &env).unwrap();
        assert_eq!(origin, Origin::Env);
        assert!(keystore.unlock("bob", &bob).is_ok());

        // An explicit file beats everything.
        let file = dir.path().join("bob.txt");
        std::fs::write(&file, "bob's\n").unwrap();
        let explicit = sources(Some(file.clone()), Some("wrong"));
        let (bob, origin) = for_key(&keystore, "bob", &explicit).unwrap();
        assert_eq!((bob.as_str(), origin), ("bob's", Origin::File(file)));

        // Nothing given and no terminal: the empty password.
        let (none, origin) = for_key(&keystore, "bob", &sources(None, None)).unwrap();
        assert_eq!((none.as_str(), origin), ("", Origin::Empty));
    }

    #[test]
    fn a_wrong_password_names_where_it_came_from() {
        let dir = tempfile::tempdir().unwrap();
        let keystore = Keystore::open(dir.path()).unwrap();
        keystore.create("bob", "right").unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "wrong").unwrap();
        let error = unlock(&keystore, "bob", Some(&file))
            .unwrap_err()
            .to_string();
        assert!(error.contains("wrong password"), "{error}");
        assert!(error.contains(&file.display().to_string()), "{error}");
        let missing = unlock(&keystore, "carol", Some(&file))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("--keystore"), "{missing}");
    }

    #[test]
    fn new_keys_take_the_file_then_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from file\n").unwrap();
        assert_eq!(
            for_new_key("k", &sources(Some(file), Some("env"))).unwrap(),
            "from file"
        );
        assert_eq!(
            for_new_key("k", &sources(None, Some("env"))).unwrap(),
            "env"
        );
        assert_eq!(for_new_key("k", &sources(None, None)).unwrap(), "");
    }
}
