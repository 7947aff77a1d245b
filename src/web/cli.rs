//! `orchard admin ...`: account and API-key chores from the shell, run while `orchard serve` is
//! stopped (the database allows one process at a time). Passwords are read from standard input, so
//! `printf '%s\n' "$PW" | orchard admin create --username alice` works in scripts.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use crate::clock::{Clock, SystemClock};
use crate::store::{Store, StoreError};
use crate::web::accounts::{self, AccountError};
use crate::web::api::{self, ApiKeyError};
use crate::web::audit;
use crate::web::storage::WebStore;

#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// Orchard's data directory [default: ./orchard-data].
    #[arg(long, env = "ORCHARD_DATA_DIR", value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Create an admin account (password from standard input).
    Create {
        #[arg(long)]
        username: String,
    },
    /// Set a new password for an admin (from standard input) and end their sessions.
    ResetPassword {
        #[arg(long)]
        username: String,
    },
    /// API keys for the automation API.
    ApiKey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key and print it (shown only once).
    Create {
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(
        "cannot open the database in {path}: {source}. Stop `orchard serve` first: only one process may use the data directory"
    )]
    Open { path: String, source: StoreError },
    #[error(
        "there is no Orchard data directory at {0}; run `orchard serve` once, or give --data-dir"
    )]
    NoDataDir(String),
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs an admin subcommand; prints what it did to standard output.
pub fn run(args: AdminArgs) -> Result<(), CliError> {
    let dir = args
        .data_dir
        .unwrap_or_else(|| PathBuf::from("./orchard-data"));
    let store = open(&dir)?;
    let clock = SystemClock;
    let result = match args.command {
        AdminCommand::Create { username } => {
            let username = accounts::parse_username(&username).map_err(CliError::Input)?;
            if store.user_by_name(&username)?.is_some() {
                return Err(AccountError::Taken(username).into());
            }
            let password = read_new_password()?;
            let hash = accounts::hash_password_blocking(&password)?;
            accounts::create_admin_with_hash(&store, clock.now(), &username, hash)?;
            store.clear_setup_token()?;
            audit::record(
                &store,
                &clock,
                "command line",
                "created admin account",
                &username,
            )?;
            println!("Created admin account {username}.");
            Ok(())
        }
        AdminCommand::ResetPassword { username } => {
            let username = accounts::parse_username(&username).map_err(CliError::Input)?;
            if store.user_by_name(&username)?.is_none() {
                return Err(AccountError::NoSuchUser(username).into());
            }
            let password = read_new_password()?;
            let hash = accounts::hash_password_blocking(&password)?;
            accounts::set_password_hash(&store, &username, hash)?;
            audit::record(
                &store,
                &clock,
                "command line",
                "reset the password of",
                &username,
            )?;
            println!("Set a new password for {username}; their sessions have ended.");
            Ok(())
        }
        AdminCommand::ApiKey {
            command: ApiKeyCommand::Create { name },
        } => match api::create_key(&store, clock.now(), &name, "command line") {
            Ok((key, record)) => {
                audit::record(
                    &store,
                    &clock,
                    "command line",
                    "created API key",
                    &record.name,
                )?;
                println!("{key}");
                eprintln!(
                    "Created API key “{}”. Copy it now: it is not shown again.",
                    record.name
                );
                Ok(())
            }
            Err(ApiKeyError::Invalid(m)) => Err(CliError::Input(m)),
            Err(ApiKeyError::Store(e)) => Err(e.into()),
        },
    };
    store.flush_blocking()?;
    result
}

fn open(dir: &Path) -> Result<Store, CliError> {
    if !dir.is_dir() {
        return Err(CliError::NoDataDir(dir.display().to_string()));
    }
    let db = dir.join("db");
    Store::open(&db).map_err(|source| CliError::Open {
        path: db.display().to_string(),
        source,
    })
}

/// Reads a new password: prompted twice on a terminal, one line otherwise.
fn read_new_password() -> Result<String, CliError> {
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let read = |prompt: &str| -> Result<String, CliError> {
        if interactive {
            eprint!("{prompt}");
            let _ = std::io::stderr().flush();
        }
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| CliError::Input(format!("cannot read the password: {e}")))?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    };
    let password = read("New password (shown as you type): ")?;
    let confirm = if interactive {
        Some(read("Type it again: ")?)
    } else {
        None
    };
    accounts::check_new_password(&password, confirm.as_deref()).map_err(CliError::Input)?;
    Ok(password)
}
