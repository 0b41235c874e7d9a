//! One Clerk instance per database (DESIGN.md, "Safe by construction"): the
//! instance that `CLERK_SECRET_KEY` belongs to (`GET /v1/instance`) is
//! recorded at first contact, and from then on a key of another instance is
//! refused, so that a wrong key can neither push our roles into a stranger's
//! users nor walk a stranger's user list into our database. A database that
//! already has users is bound only when most of a sample of them (admins
//! first) exists in that instance. `clerk-role-sync rebind-instance` binds a
//! database to another instance on purpose.

use std::fmt;

use crate::clerk::{ClerkClient, ClerkError, ClerkInstance};
use crate::db::rows::{BoundInstance, now};
use crate::db::{Db, DbError, Queries as _};
use crate::domain::ClerkUserId;
use crate::with_conn;

/// Live users looked up in Clerk, at most, before a database that has users
/// is bound.
pub const SAMPLE_LOOKUPS: i64 = 10;

/// The command that binds a database to another instance on purpose.
pub const REBIND_COMMAND: &str = "clerk-role-sync rebind-instance";

/// Where the database and the current key stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// The database was bound just now, to the key's instance.
    Bound(BoundInstance),
    /// The database was already bound to the key's instance.
    Confirmed(BoundInstance),
    /// The key's instance is not the database's: nothing may be sent to it
    /// or read from it into the database.
    Refused(Refusal),
}

/// Why the key's instance is not the database's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The database is bound to another instance.
    OtherInstance {
        bound: BoundInstance,
        current: ClerkInstance,
    },
    /// The database is not bound yet, and most of the live users looked up
    /// do not exist in the key's instance.
    UsersElsewhere {
        current: ClerkInstance,
        looked_up: usize,
        found: usize,
    },
}

impl Refusal {
    /// The instance of the current key.
    pub fn current(&self) -> &ClerkInstance {
        match self {
            Self::OtherInstance { current, .. } | Self::UsersElsewhere { current, .. } => current,
        }
    }

    /// The instance the database is bound to, if it is.
    pub fn bound(&self) -> Option<&BoundInstance> {
        match self {
            Self::OtherInstance { bound, .. } => Some(bound),
            Self::UsersElsewhere { .. } => None,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OtherInstance { bound, current } => write!(
                f,
                "CLERK_SECRET_KEY belongs to Clerk instance {} ({}), but this database is bound \
                 to Clerk instance {} ({}); nothing is pushed to or read from {}. Use a key of \
                 {}, or, if the database is to move to {} on purpose, run `{REBIND_COMMAND}` \
                 with this key",
                current.id,
                current.environment_type,
                bound.instance_id,
                bound.environment_type,
                current.id,
                bound.instance_id,
                current.id,
            ),
            Self::UsersElsewhere {
                current,
                looked_up,
                found,
            } => write!(
                f,
                "this database is not bound to a Clerk instance yet, and only {found} of the \
                 {looked_up} live users looked up exist in Clerk instance {} ({}), the instance \
                 of CLERK_SECRET_KEY: its users belong to another instance. Use that instance's \
                 key, or, if {} is the right instance, bind it on purpose with `{REBIND_COMMAND}`",
                current.id, current.environment_type, current.id,
            ),
        }
    }
}

/// Why the instance could not be confirmed now; a later try may succeed.
#[derive(Debug, thiserror::Error)]
pub enum ConfirmError {
    #[error("could not ask Clerk which instance CLERK_SECRET_KEY belongs to: {0}")]
    Clerk(#[from] ClerkError),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// The instance the database is bound to, if any.
pub async fn bound(db: &Db) -> Result<Option<BoundInstance>, DbError> {
    with_conn!(db, conn => Ok(conn.bound_instance().await?))
}

/// Confirms that `clerk`'s key belongs to the database's instance. An
/// unbound database is bound to it at this first contact: at once when it
/// has no live users, else only when more than half of a sample of them
/// (admins first, at most [`SAMPLE_LOOKUPS`]) exists there.
pub async fn confirm(db: &Db, clerk: &ClerkClient) -> Result<Binding, ConfirmError> {
    let current = clerk.get_instance().await?;
    // No connection is held while Clerk is asked: SQLite has only one.
    let (bound, sample) = with_conn!(db, conn => {
        let bound = conn.bound_instance().await?;
        let sample = match bound {
            Some(_) => Vec::new(),
            None => sample(conn).await?,
        };
        Ok::<_, DbError>((bound, sample))
    })?;
    if let Some(bound) = bound {
        return Ok(compare(bound, current));
    }
    if !sample.is_empty() {
        let mut found = 0;
        for id in &sample {
            if clerk.get_user(id).await?.is_some() {
                found += 1;
            }
        }
        if !mostly_found(found, sample.len()) {
            return Ok(Binding::Refused(Refusal::UsersElsewhere {
                current,
                looked_up: sample.len(),
                found,
            }));
        }
    }
    let instance = BoundInstance {
        instance_id: current.id.clone(),
        environment_type: current.environment_type.clone(),
        bound_at: now(),
    };
    let (inserted, bound) = with_conn!(db, conn => {
        let inserted = conn.bind_instance(&instance).await?;
        Ok::<_, DbError>((inserted, conn.bound_instance().await?))
    })?;
    let bound = bound.unwrap_or(instance);
    if inserted {
        tracing::info!(
            instance.id = %bound.instance_id,
            instance.environment = %bound.environment_type,
            sampled = sample.len(),
            "the database is now bound to this Clerk instance"
        );
        return Ok(Binding::Bound(bound));
    }
    // Another replica bound it meanwhile, maybe with another key.
    Ok(compare(bound, current))
}

/// Binds the database to the instance of `clerk`'s key, whatever it was
/// bound to; what it was bound to before, and now.
pub async fn rebind(
    db: &Db,
    clerk: &ClerkClient,
) -> Result<(Option<BoundInstance>, BoundInstance), ConfirmError> {
    let current = clerk.get_instance().await?;
    let instance = BoundInstance {
        instance_id: current.id,
        environment_type: current.environment_type,
        bound_at: now(),
    };
    let before = with_conn!(db, conn => {
        let before = conn.bound_instance().await?;
        conn.rebind_instance(&instance).await?;
        Ok::<_, DbError>(before)
    })?;
    tracing::warn!(
        instance.id = %instance.instance_id,
        previous = before.as_ref().map_or("none", |bound| bound.instance_id.as_str()),
        "the database was bound to another Clerk instance on purpose"
    );
    Ok((before, instance))
}

/// The live users to look up: admins first, then the others, newest first.
async fn sample<C: crate::db::Queries>(conn: &mut C) -> Result<Vec<ClerkUserId>, DbError> {
    let mut ids = conn.live_user_ids(true, SAMPLE_LOOKUPS).await?;
    let room = SAMPLE_LOOKUPS - i64::try_from(ids.len()).unwrap_or(SAMPLE_LOOKUPS);
    if room > 0 {
        ids.extend(conn.live_user_ids(false, room).await?);
    }
    Ok(ids)
}

fn compare(bound: BoundInstance, current: ClerkInstance) -> Binding {
    if bound.instance_id == current.id {
        Binding::Confirmed(bound)
    } else {
        Binding::Refused(Refusal::OtherInstance { bound, current })
    }
}

/// More than half of the users looked up were found.
fn mostly_found(found: usize, looked_up: usize) -> bool {
    found * 2 > looked_up
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str) -> ClerkInstance {
        ClerkInstance {
            id: id.into(),
            environment_type: "production".into(),
        }
    }

    fn bound_to(id: &str) -> BoundInstance {
        BoundInstance {
            instance_id: id.into(),
            environment_type: "development".into(),
            bound_at: now(),
        }
    }

    #[test]
    fn more_than_half_of_the_sample_must_exist() {
        assert!(mostly_found(10, 10));
        assert!(mostly_found(6, 10));
        assert!(!mostly_found(5, 10), "half is not most");
        assert!(!mostly_found(0, 10));
        assert!(mostly_found(1, 1));
        assert!(!mostly_found(0, 1));
        assert!(mostly_found(2, 3));
    }

    #[test]
    fn the_same_id_confirms_and_another_refuses() {
        let bound = bound_to("ins_a");
        assert_eq!(
            compare(bound.clone(), instance("ins_a")),
            Binding::Confirmed(bound)
        );
        let Binding::Refused(refusal) = compare(bound_to("ins_a"), instance("ins_b")) else {
            panic!("another instance is refused");
        };
        assert_eq!(refusal.current().id, "ins_b");
        assert_eq!(
            refusal.bound().map(|bound| bound.instance_id.as_str()),
            Some("ins_a")
        );
    }

    #[test]
    fn a_refusal_names_both_instances_and_how_to_rebind() {
        let other = Refusal::OtherInstance {
            bound: bound_to("ins_bound"),
            current: instance("ins_current"),
        }
        .to_string();
        for part in ["ins_bound", "ins_current", REBIND_COMMAND] {
            assert!(other.contains(part), "{other}");
        }
        let elsewhere = Refusal::UsersElsewhere {
            current: instance("ins_current"),
            looked_up: 10,
            found: 2,
        }
        .to_string();
        for part in ["ins_current", "2 of the 10", REBIND_COMMAND] {
            assert!(elsewhere.contains(part), "{elsewhere}");
        }
    }
}
