//! The store: sqlx repositories over SQLite (the embedded default) and PostgreSQL
//! (production), with migrations in `migrations/sqlite` and `migrations/postgres`.
//!
//! # One code path, two backends
//!
//! [`Store`] holds either a `SqlitePool` or a `PgPool`. Every repository method is written
//! once inside the private `with_pool!` macro, which expands its body for each backend with
//! the concrete pool type: the same `sqlx::query(..).bind(..)` calls compile against
//! `Sqlite` and `Postgres`, so there is neither a `sqlx::Any` layer (which cannot bind
//! decimals) nor per-backend copies of the queries. The SQL is the portable subset both
//! speak: `$N` placeholders (SQLite accepts them), `ON CONFLICT … DO NOTHING / DO UPDATE`,
//! `RETURNING`. The two migration directories define the same tables and columns; they
//! differ only in column types (`INTEGER` / `BIGINT`, `AUTOINCREMENT` / identity) and in
//! how CHECK constraints read a decimal.
//!
//! # Column encoding
//!
//! - Money and quantities (`rust_decimal::Decimal`) are TEXT holding `Decimal::to_string`
//!   on both backends: values and their scale round-trip exactly (28 significant digits),
//!   and one code path binds them. Sums are computed in Rust with `Decimal`, never in SQL
//!   floating point. In PostgreSQL, ad-hoc SQL casts (`pnl::numeric`).
//! - JSON documents (diffs, findings, node outputs, scopes, snapshots, orders) are TEXT.
//! - Timestamps are Unix seconds (`i64`), always passed in by the caller (the engine's
//!   clock: simulated time in replay), never read from the database server's clock.
//! - Enums are their snake_case names, the same names as their serde form.
//!
//! # Atomic writes
//!
//! [`Store::record_fill`] writes a fill, its order, the book's open trade, the closed
//! trade and the broker snapshot in one transaction; [`Store::record_intent_submitted`]
//! marks an intent submitted together with its order and the broker snapshot;
//! [`Store::finish_execution`] writes an execution with its nodes. SQLite write
//! transactions start with `BEGIN IMMEDIATE`, so concurrent writers wait on the busy
//! timeout instead of failing on a lock upgrade.
//!
//! # SQLite settings
//!
//! WAL journal, `synchronous = FULL` (an order intent is on disk before the order is
//! sent), foreign keys on, 5 s busy timeout. `sqlite::memory:` is accepted (one
//! connection, gone when the store is dropped).

#[macro_use]
mod macros;

mod batch;
mod codec;
mod executions;
mod journal;
mod leases;
mod orders;
mod status;
mod trades;
mod types;

pub use status::*;
pub use types::*;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::pool::PoolOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, Postgres};
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous,
};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long SQLite waits for a lock held by another connection.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long acquiring a pooled connection may take before the call fails. While the server
/// refuses connections (still starting) the pool keeps retrying for this long.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// A store failure. Messages name the table and the operation (or the URL and the step
/// of connecting); URLs in messages have their password replaced by `***`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store URL is not `sqlite://PATH`, `sqlite::memory:` or `postgres://…`.
    #[error("store URL {url}: {reason}")]
    Url {
        /// The URL, password redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The directory of the SQLite file could not be created.
    #[error("store: cannot create directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened or reached.
    #[error("store: cannot connect to {backend} database {url}: {source}")]
    Connect {
        /// `sqlite` or `postgres`.
        backend: &'static str,
        /// The URL, password redacted.
        url: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// Running the migrations failed (or the database has migrations this build does not
    /// know, or an applied migration was edited).
    #[error("store: {backend} migrations failed: {source}")]
    Migrate {
        /// `sqlite` or `postgres`.
        backend: &'static str,
        /// The migrator's error.
        #[source]
        source: MigrateError,
    },
    /// A statement failed.
    #[error("store: {op} {table}: {source}")]
    Query {
        /// Table.
        table: &'static str,
        /// Operation (`insert`, `upsert`, `update`, `delete`, `select`, `read`, `begin`,
        /// `commit`).
        op: &'static str,
        /// The driver's error (a constraint violation, a lost connection, …).
        #[source]
        source: sqlx::Error,
    },
    /// A stored value could not be read back as its type.
    #[error("store: {table}.{column}: {reason}")]
    Decode {
        /// Table.
        table: &'static str,
        /// Column.
        column: &'static str,
        /// The value and what is wrong with it.
        reason: String,
    },
    /// A value could not be stored (JSON serialization, an integer out of range).
    #[error("store: {table}.{column}: cannot store value: {reason}")]
    Encode {
        /// Table.
        table: &'static str,
        /// Column.
        column: &'static str,
        /// Why.
        reason: String,
    },
    /// [`Store::open_existing`]: the SQLite file does not exist (the daemon has not run
    /// with this store yet).
    #[error("store: {} does not exist (the daemon has not run with this store yet)", path.display())]
    Missing {
        /// The database file.
        path: PathBuf,
    },
    /// [`Store::open_existing`]: the database lacks migrations this build knows (a newer
    /// `ztraded` than the daemon that wrote it, or a database never migrated).
    #[error(
        "store: the {backend} database lacks migrations {missing:?} of this ztraded; run `ztraded migrate` (or start the daemon) first"
    )]
    Outdated {
        /// `sqlite` or `postgres`.
        backend: &'static str,
        /// Versions of the migrations not applied.
        missing: Vec<i64>,
    },
    /// [`Store::insert_intent_fenced`]: the pipeline's lease passed to another holder
    /// (the stored epoch is not ours): the intent is not written, the order must not go out.
    #[error(
        "store: order intent of pipeline {pipeline} refused: lease epoch {epoch} is not the current holder's ({})",
        stored.map_or("none".to_string(), |e| e.to_string())
    )]
    Fenced {
        /// The pipeline.
        pipeline: String,
        /// The epoch the writer holds.
        epoch: u64,
        /// The epoch stored (the current holder's), if any.
        stored: Option<u64>,
    },
    /// An update named a row that does not exist.
    #[error("store: {table}: no row {key:?}")]
    NotFound {
        /// Table.
        table: &'static str,
        /// The key looked for.
        key: String,
    },
}

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The store handle: a connection pool to SQLite or PostgreSQL. Cheap to clone (the pool
/// is shared), `Send + Sync`; every method is async and cancel-safe in the sense that a
/// dropped call rolls its transaction back.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    url: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .field("url", &self.url)
            .finish()
    }
}

/// Begins a write transaction: `BEGIN IMMEDIATE` on SQLite (take the write lock now, so
/// that a concurrent writer waits on the busy timeout instead of failing later on a lock
/// upgrade), a plain `BEGIN` on PostgreSQL.
pub(crate) trait BeginWrite {
    /// The backend.
    type Db: sqlx::Database;
    /// The transaction.
    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>> + Send;
}

impl BeginWrite for SqlitePool {
    type Db = Sqlite;
    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<sqlx::Transaction<'static, Sqlite>, sqlx::Error>> + Send {
        self.begin_with("BEGIN IMMEDIATE")
    }
}

impl BeginWrite for PgPool {
    type Db = Postgres;
    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<sqlx::Transaction<'static, Postgres>, sqlx::Error>> + Send
    {
        self.begin()
    }
}

impl Store {
    /// Opens the store at `url` and runs the migrations.
    ///
    /// - `sqlite://PATH`: a relative `PATH` is resolved against `base_dir` (the config
    ///   directory: `sqlite://.ztraded/ztraded.db` is `<base_dir>/.ztraded/ztraded.db`);
    ///   `sqlite:///abs/path.db` is absolute. Missing parent directories and the file are
    ///   created.
    /// - `sqlite::memory:`: a private in-memory database (one connection).
    /// - `postgres://user@host:port/db` (or `postgresql://`): the database must exist.
    ///
    /// `max_connections` (at least 1) bounds the pool.
    ///
    /// Errors: [`StoreError::Url`] for another scheme or query parameters on a SQLite URL,
    /// [`StoreError::CreateDir`], [`StoreError::Connect`], [`StoreError::Migrate`].
    pub async fn connect(
        url: &str,
        max_connections: u32,
        base_dir: &Path,
    ) -> Result<Store, StoreError> {
        let store = Store::open(url, max_connections, base_dir).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Opens a store that exists, for reading (`ztraded status`, `ztraded report`): like
    /// [`Store::connect`], but nothing is created and no migration runs. A `sqlite://PATH`
    /// whose file does not exist is [`StoreError::Missing`]; a database that lacks a
    /// migration of this build is [`StoreError::Outdated`]. Other errors as for
    /// [`Store::connect`].
    pub async fn open_existing(
        url: &str,
        max_connections: u32,
        base_dir: &Path,
    ) -> Result<Store, StoreError> {
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path != ":memory:" && !path.is_empty() && !path.contains('?') {
                let path = Path::new(path);
                let path = if path.is_absolute() {
                    path.to_path_buf()
                } else {
                    base_dir.join(path)
                };
                if !path.is_file() {
                    return Err(StoreError::Missing { path });
                }
            }
        }
        let store = Store::open(url, max_connections, base_dir).await?;
        let missing = store.missing_migrations().await?;
        if !missing.is_empty() {
            let backend = store.backend();
            store.close().await;
            return Err(StoreError::Outdated { backend, missing });
        }
        Ok(store)
    }

    /// Versions of this build's migrations that the database has not applied (all of them
    /// when it has no migration table).
    async fn missing_migrations(&self) -> Result<Vec<i64>, StoreError> {
        let (migrator, table_exists) = match &self.pool {
            Pool::Sqlite(p) => (
                &SQLITE_MIGRATIONS,
                sqlx::query(
                    "SELECT name FROM sqlite_master WHERE type = 'table' \
                     AND name = '_sqlx_migrations'",
                )
                .fetch_optional(p)
                .await
                .map_err(codec::q("_sqlx_migrations", "select"))?
                .is_some(),
            ),
            Pool::Postgres(p) => (
                &POSTGRES_MIGRATIONS,
                sqlx::query(
                    "SELECT table_name FROM information_schema.tables \
                     WHERE table_name = '_sqlx_migrations' AND table_schema = current_schema()",
                )
                .fetch_optional(p)
                .await
                .map_err(codec::q("_sqlx_migrations", "select"))?
                .is_some(),
            ),
        };
        let applied: Vec<i64> = if table_exists {
            with_pool!(self, |pool| {
                let rows = sqlx::query("SELECT version FROM _sqlx_migrations WHERE success")
                    .fetch_all(pool)
                    .await
                    .map_err(codec::q("_sqlx_migrations", "select"))?;
                rows.iter()
                    .map(|r| codec::Cols::new(r, "_sqlx_migrations").int("version"))
                    .collect::<Result<Vec<i64>, StoreError>>()?
            })
        } else {
            Vec::new()
        };
        Ok(migrator
            .iter()
            .map(|m| m.version)
            .filter(|v| !applied.contains(v))
            .collect())
    }

    /// Opens the pool (see [`Store::connect`]) without running the migrations.
    async fn open(url: &str, max_connections: u32, base_dir: &Path) -> Result<Store, StoreError> {
        let max = max_connections.max(1);
        let shown = redact_url(url);
        let store = if let Some(rest) = url.strip_prefix("sqlite:") {
            let (options, memory) = sqlite_options(&shown, rest, base_dir).await?;
            let pool_options = PoolOptions::<Sqlite>::new().acquire_timeout(ACQUIRE_TIMEOUT);
            let pool_options = if memory {
                // Every connection to `:memory:` is its own database: keep exactly one, forever.
                pool_options
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
            } else {
                pool_options.max_connections(max)
            };
            let pool = pool_options.connect_with(options.clone()).await;
            let pool = match pool {
                Ok(pool) => pool,
                Err(e) => {
                    return Err(StoreError::Connect {
                        backend: "sqlite",
                        url: shown,
                        source: connect_failure::<sqlx::SqliteConnection>(e, &options).await,
                    });
                }
            };
            Store {
                pool: Pool::Sqlite(pool),
                url: shown,
            }
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url).map_err(|e| StoreError::Url {
                url: shown.clone(),
                reason: e.to_string(),
            })?;
            let pool = PoolOptions::<Postgres>::new()
                .max_connections(max)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options.clone())
                .await;
            let pool = match pool {
                Ok(pool) => pool,
                Err(e) => {
                    return Err(StoreError::Connect {
                        backend: "postgres",
                        url: shown,
                        source: connect_failure::<sqlx::PgConnection>(e, &options).await,
                    });
                }
            };
            Store {
                pool: Pool::Postgres(pool),
                url: shown,
            }
        } else {
            return Err(StoreError::Url {
                url: shown,
                reason: "expected sqlite://PATH, sqlite::memory: or postgres://USER@HOST/DB"
                    .to_string(),
            });
        };
        Ok(store)
    }

    /// Opens an existing store for reading only (what `ztraded plan` lists): no file or
    /// directory is created and no migration runs. A SQLite file is opened read-only (a
    /// relative path is resolved against `base_dir`, as in [`Store::connect`]); PostgreSQL
    /// sessions are read-only (`default_transaction_read_only`). `Ok(None)` when there is
    /// no store to read: the SQLite file does not exist, or `sqlite::memory:` (empty
    /// whenever it is opened).
    ///
    /// Errors: as [`Store::connect`], without [`StoreError::CreateDir`] and
    /// [`StoreError::Migrate`].
    pub async fn open_read_only(url: &str, base_dir: &Path) -> Result<Option<Store>, StoreError> {
        let shown = redact_url(url);
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let Some(path) = sqlite_path(&shown, rest, base_dir)? else {
                return Ok(None);
            };
            if !path.is_file() {
                return Ok(None);
            }
            let options = SqliteConnectOptions::new()
                .filename(&path)
                .read_only(true)
                .busy_timeout(SQLITE_BUSY_TIMEOUT);
            let pool = PoolOptions::<Sqlite>::new()
                .max_connections(1)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options)
                .await
                .map_err(|source| StoreError::Connect {
                    backend: "sqlite",
                    url: shown.clone(),
                    source,
                })?;
            return Ok(Some(Store {
                pool: Pool::Sqlite(pool),
                url: shown,
            }));
        }
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::Url {
                url: shown,
                reason: "expected sqlite://PATH, sqlite::memory: or postgres://USER@HOST/DB"
                    .to_string(),
            });
        }
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Url {
                url: shown.clone(),
                reason: e.to_string(),
            })?
            .options([("default_transaction_read_only", "on")]);
        let pool = PoolOptions::<Postgres>::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Connect {
                backend: "postgres",
                url: shown.clone(),
                source,
            })?;
        Ok(Some(Store {
            pool: Pool::Postgres(pool),
            url: shown,
        }))
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// The URL the store was opened with, password replaced by `***`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Applies the migrations not applied yet (embedded at compile time from
    /// `migrations/<backend>`). Safe to run again and from several daemons at once
    /// (PostgreSQL takes an advisory lock). Errors: [`StoreError::Migrate`], also when the
    /// database has a migration this build does not know or an applied one was edited.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let backend = self.backend();
        let r = match &self.pool {
            Pool::Sqlite(p) => SQLITE_MIGRATIONS.run(p).await,
            Pool::Postgres(p) => POSTGRES_MIGRATIONS.run(p).await,
        };
        r.map_err(|source| StoreError::Migrate { backend, source })
    }

    /// Closes every connection (waits for the ones in use to come back).
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}

/// The error to report for a pool that could not connect: when the pool only says it timed
/// out (it retries while the server refuses connections), one direct attempt tells why.
async fn connect_failure<C: sqlx::Connection>(
    error: sqlx::Error,
    options: &<C as sqlx::Connection>::Options,
) -> sqlx::Error {
    if !matches!(error, sqlx::Error::PoolTimedOut) {
        return error;
    }
    match tokio::time::timeout(ACQUIRE_TIMEOUT, C::connect_with(options)).await {
        Ok(Err(direct)) => direct,
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            error
        }
        Err(_) => error,
    }
}

/// The database file of the part of a SQLite URL after `sqlite:` (a relative path resolved
/// against `base_dir`); `None` for `:memory:`.
fn sqlite_path(shown: &str, rest: &str, base_dir: &Path) -> Result<Option<PathBuf>, StoreError> {
    let url_err = |reason: &str| StoreError::Url {
        url: shown.to_string(),
        reason: reason.to_string(),
    };
    let path = rest.strip_prefix("//").unwrap_or(rest);
    if path.contains('?') {
        return Err(url_err(
            "query parameters are not supported (the store sets the SQLite options itself)",
        ));
    }
    if path == ":memory:" {
        return Ok(None);
    }
    if path.is_empty() {
        return Err(url_err("no file path (expected sqlite://PATH)"));
    }
    let path = Path::new(path);
    Ok(Some(if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }))
}

/// SQLite options for the part of the URL after `sqlite:`; `true` for an in-memory database.
async fn sqlite_options(
    shown: &str,
    rest: &str,
    base_dir: &Path,
) -> Result<(SqliteConnectOptions, bool), StoreError> {
    let Some(path) = sqlite_path(shown, rest, base_dir)? else {
        let options = SqliteConnectOptions::new()
            .in_memory(true)
            .foreign_keys(true);
        return Ok((options, true));
    };
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT);
    Ok((options, false))
}

/// `url` with the password of its user info replaced by `***`.
fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let auth_start = scheme_end + 3;
    let auth_end = url[auth_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| auth_start + i);
    let authority = &url[auth_start..auth_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let user_info = &authority[..at];
    let Some(colon) = user_info.find(':') else {
        return url.to_string();
    };
    format!(
        "{}{}:***{}",
        &url[..auth_start],
        &user_info[..colon],
        &url[auth_start + at..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db?sslmode=require"),
            "postgres://u:***@h:5432/db?sslmode=require"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("sqlite://.ztraded/z.db"),
            "sqlite://.ztraded/z.db"
        );
        assert_eq!(
            redact_url("postgres://u:p@ss@h/db"),
            "postgres://u:***@h/db"
        );
    }

    #[test]
    fn halt_keys_round_trip() {
        for s in [
            Scope::All,
            Scope::Pipeline("momentum-1".into()),
            Scope::Symbol("BRK.B".into()),
        ] {
            assert_eq!(Scope::from_key(&s.key()), Some(s));
        }
        assert_eq!(Scope::from_key("pipeline:"), None);
        assert_eq!(Scope::from_key("everything"), None);
    }

    #[test]
    fn scopes_cover_what_they_name() {
        assert!(Scope::All.covers("p", "AAPL"));
        assert!(Scope::Pipeline("p".into()).covers("p", "MSFT"));
        assert!(!Scope::Pipeline("p".into()).covers("q", "AAPL"));
        assert!(Scope::Symbol("AAPL".into()).covers("q", "AAPL"));
        assert!(!Scope::Symbol("AAPL".into()).covers("p", "MSFT"));
    }

    #[test]
    fn scope_json_is_the_close_body_shape() {
        assert_eq!(serde_json::to_string(&Scope::All).unwrap(), r#""all""#);
        assert_eq!(
            serde_json::to_string(&Scope::Pipeline("p".into())).unwrap(),
            r#"{"pipeline":"p"}"#
        );
        assert_eq!(
            serde_json::from_str::<Scope>(r#"{"symbol":"AAPL"}"#).unwrap(),
            Scope::Symbol("AAPL".into())
        );
    }
}
