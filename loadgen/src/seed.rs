//! `loadgen seed`: many users, loaded straight into the database in large
//! set-based batches, each with its creation audit row and counted in the
//! role statistics, as if a backfill had brought them in.

use std::time::Instant;

use anyhow::Context;
use clerk_role_sync::config::DatabaseUrl;
use clerk_role_sync::db::{Backend, Db};
use clerk_role_sync::with_conn;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection, RunQueryDsl};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The database to fill (migrated first if needed).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Users to add.
    #[arg(long, default_value_t = 1_000_000)]
    pub users: i64,
    /// Users per transaction.
    #[arg(long, default_value_t = 100_000)]
    pub batch: i64,
}

/// Which role seeded user `n` gets: 1 in 500 an admin, 1 in 10 an
/// instructor, the rest students (the shape of a learning platform).
const ROLE_OF_N: &str =
    "CASE WHEN n % 500 = 0 THEN 'ADMIN' WHEN n % 10 = 0 THEN 'INSTRUCTOR' ELSE 'STUDENT' END";

/// The statements of one batch: numbers `$1..=$2` are the users, `$3` the
/// id prefix. `numbers` yields `n`; `created` is the creation time of user
/// `n` (one millisecond apart, so the list has a stable newest-first order).
/// The two inserts take all three parameters; the counter update, the last,
/// only the numbers. Seeded users are counted in shard 0: the statistics
/// add the shards up.
fn statements(numbers: &str, created: &str) -> [String; 3] {
    [
        format!(
            "{numbers} INSERT INTO users (id, email, first_name, last_name, role, clerk_updated_at, clerk_role, created_at, updated_at) \
             SELECT $3 || n, $3 || n || '@example.com', 'Seeded', 'User ' || n, {ROLE_OF_N}, 0, {ROLE_OF_N}, {created}, {created} FROM s"
        ),
        format!(
            "{numbers} INSERT INTO role_changes (user_id, old_role, new_role, source, actor, changed_at) \
             SELECT $3 || n, NULL, {ROLE_OF_N}, 'backfill', 'seed', {created} FROM s"
        ),
        format!(
            "{numbers} UPDATE role_counts SET count = count + \
             (SELECT count(*) FROM s WHERE {ROLE_OF_N} = role_counts.role) WHERE shard = 0"
        ),
    ]
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let url = DatabaseUrl::parse(&args.database_url).map_err(anyhow::Error::msg)?;
    let db = Db::connect(&url, 1).await?;
    db.migrate().await?;
    let prefix = format!("user_seed{:x}x", rand::random::<u32>());
    let started = Instant::now();
    let mut from = 1;
    while from <= args.users {
        let to = (from + args.batch - 1).min(args.users);
        seed_batch(&db, &prefix, from, to)
            .await
            .with_context(|| format!("seeding users {from}..={to}"))?;
        println!(
            "{to} users seeded ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
        from = to + 1;
    }
    // Fresh statistics, as after any bulk load: otherwise the first queries
    // are planned for the table as it was, until autovacuum catches up.
    with_conn!(db, conn => {
        diesel::sql_query("ANALYZE").execute(conn).await.map_err(anyhow::Error::from)
    })?;
    let rate = args.users as f64 / started.elapsed().as_secs_f64();
    println!(
        "done: {} users at {rate:.0} users/s, ids {prefix}<n>",
        args.users
    );
    Ok(())
}

async fn seed_batch(db: &Db, prefix: &str, from: i64, to: i64) -> anyhow::Result<()> {
    let (numbers, created) = match db.backend() {
        Backend::Postgres => (
            "WITH s AS (SELECT generate_series($1::bigint, $2::bigint) AS n)",
            "((now() AT TIME ZONE 'UTC') - n * interval '1 millisecond')",
        ),
        Backend::Sqlite => (
            "WITH RECURSIVE s(n) AS (SELECT $1 UNION ALL SELECT n + 1 FROM s WHERE n < $2)",
            "strftime('%Y-%m-%d %H:%M:%f', 'now', printf('-%.3f seconds', n / 1000.0))",
        ),
    };
    // Both backends take `$n` placeholders (SQLite reads them as names,
    // numbered in order of first use).
    let [users, audit, counters] = statements(numbers, created);
    with_conn!(db, conn => {
        conn.transaction(async |conn| {
            for sql in [&users, &audit] {
                diesel::sql_query(sql)
                    .bind::<BigInt, _>(from)
                    .bind::<BigInt, _>(to)
                    .bind::<Text, _>(prefix)
                    .execute(conn)
                    .await?;
            }
            diesel::sql_query(&counters)
                .bind::<BigInt, _>(from)
                .bind::<BigInt, _>(to)
                .execute(conn)
                .await?;
            Ok::<_, diesel::result::Error>(())
        })
        .await
        .map_err(anyhow::Error::from)
    })?;
    Ok(())
}
