//! An empty PostgreSQL database of a test's own on the local stack's server
//! (`FXTRIAGE_DATABASE_URL`), dropped again by [`FreshDatabase::drop_database`].
//! (Plain tokio-postgres, so that fxtriage-db's own tests can use it too.)

use crate::stack;

/// A new, empty (not migrated) database with a unique name.
#[derive(Debug)]
pub struct FreshDatabase {
    /// Its URL, for `FXTRIAGE_DATABASE_URL` of a process under test.
    pub url: String,
    pub name: String,
    server_url: String,
}

/// A connection to `url`, driven by a task of its own.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|error| panic!("cannot connect to PostgreSQL: {error}"));
    tokio::spawn(async move {
        let _closed = connection.await;
    });
    client
}

impl FreshDatabase {
    /// A database named `{prefix}_{random}`, or `None` after skipping the test
    /// when `FXTRIAGE_DATABASE_URL` is unset (a failure when the stack is required).
    pub async fn create(prefix: &str) -> Option<Self> {
        let server_url = stack::setting("FXTRIAGE_DATABASE_URL")?;
        Some(Self::create_on(&server_url, prefix).await)
    }

    /// A database named `{prefix}_{random}` on the server of `server_url`.
    pub async fn create_on(server_url: &str, prefix: &str) -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("{prefix}_{}", &suffix[..16]).to_lowercase();
        connect(server_url)
            .await
            .execute(&format!("CREATE DATABASE {name}"), &[])
            .await
            .expect("create the test database");
        let (base, query) = match server_url.split_once('?') {
            Some((base, query)) => (base, format!("?{query}")),
            None => (server_url, String::new()),
        };
        let server = base.rsplit_once('/').expect("a database in the URL").0;
        Self {
            url: format!("{server}/{name}{query}"),
            name,
            server_url: server_url.to_owned(),
        }
    }

    /// A connection to it.
    pub async fn connect(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }

    /// Drops it, closing what is still connected to it.
    pub async fn drop_database(self) {
        connect(&self.server_url)
            .await
            .execute(
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
                &[],
            )
            .await
            .expect("drop the test database");
    }
}
