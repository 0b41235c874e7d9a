//! The two-way sync rules, as pure functions.
//!
//! Clerk is the serialization point: every write there (our push or a
//! dashboard edit) gets a larger `updated_at`, so the newest Clerk state seen
//! is the truth once no push is pending. Per user we keep that newest state
//! (role + `updated_at`), whether it came from a webhook or from a push
//! response. While a push is pending the database shows the admin's intent,
//! and a differing Clerk state is remembered rather than applied; when no push
//! is pending the database role is the newest Clerk state.

use super::Role;

/// `public_metadata.role` as Clerk holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataRole {
    /// One of our three roles (after trimming and case-folding).
    Known(Role),
    /// No `role` key (or `null`): the user is a STUDENT.
    Missing,
    /// A value we do not know; the current role is kept.
    Unknown,
}

/// A role as Clerk held it at a point of its timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClerkState {
    pub role: Role,
    /// Clerk's `updated_at`, milliseconds since the epoch.
    pub updated_at: i64,
}

impl ClerkState {
    /// The later of two states (the first on a tie).
    pub fn newest(self, other: Option<ClerkState>) -> ClerkState {
        match other {
            Some(other) if other.updated_at > self.updated_at => other,
            _ => self,
        }
    }
}

/// What we know of a user before applying a Clerk state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    /// The role in our database.
    pub role: Role,
    /// The newest Clerk state applied so far, if any.
    pub clerk: Option<ClerkState>,
    /// Deleted in Clerk: final.
    pub deleted: bool,
    /// A push of the admin's intent to Clerk is still pending.
    pub push_pending: bool,
}

/// What to do with a Clerk state (from a webhook or a re-read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Store `clerk` as the newest Clerk state, refresh the profile and set
    /// the database role to `role` (which may be the current one).
    Apply {
        clerk: ClerkState,
        role: Role,
        /// The metadata held a value we do not know; `role` kept the current one.
        unknown_role: bool,
    },
    /// Older than the Clerk state already applied: changes nothing.
    Stale,
    /// The user was deleted: nothing brings it back.
    Deleted,
    /// Same `updated_at` as the state applied but another role: one of the
    /// two is wrong, so the user must be re-read from Clerk.
    Conflict,
}

/// Decides what a Clerk state at `updated_at` with `metadata` does to a user
/// we know as `known` (`None` for a user we have never seen).
pub fn judge(known: Option<Known>, metadata: MetadataRole, updated_at: i64) -> Verdict {
    judge_with(known, metadata, updated_at, false)
}

/// Like [`judge`], for a state just read back from Clerk after a
/// [`Verdict::Conflict`]: Clerk's answer settles which role that instant had.
pub fn judge_reread(known: Option<Known>, metadata: MetadataRole, updated_at: i64) -> Verdict {
    judge_with(known, metadata, updated_at, true)
}

fn judge_with(
    known: Option<Known>,
    metadata: MetadataRole,
    updated_at: i64,
    reread: bool,
) -> Verdict {
    let fallback = known.map_or(Role::Student, |k| k.role);
    let (incoming, unknown_role) = match metadata {
        MetadataRole::Known(role) => (role, false),
        MetadataRole::Missing => (Role::Student, false),
        MetadataRole::Unknown => (fallback, true),
    };
    let clerk = ClerkState {
        role: incoming,
        updated_at,
    };
    let Some(known) = known else {
        return Verdict::Apply {
            clerk,
            role: incoming,
            unknown_role,
        };
    };
    if known.deleted {
        return Verdict::Deleted;
    }
    match known.clerk {
        Some(applied) if updated_at < applied.updated_at => return Verdict::Stale,
        // (An unknown value at the same instant is the state we already kept.)
        Some(applied)
            if updated_at == applied.updated_at
                && incoming != applied.role
                && !unknown_role
                && !reread =>
        {
            return Verdict::Conflict;
        }
        _ => {}
    }
    Verdict::Apply {
        clerk,
        role: if known.push_pending {
            known.role
        } else {
            incoming
        },
        unknown_role,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn known(role: Role, clerk: Option<(Role, i64)>, push_pending: bool) -> Option<Known> {
        Some(Known {
            role,
            clerk: clerk.map(|(role, updated_at)| ClerkState { role, updated_at }),
            deleted: false,
            push_pending,
        })
    }

    fn apply(role: Role, clerk_role: Role, updated_at: i64) -> Verdict {
        Verdict::Apply {
            clerk: ClerkState {
                role: clerk_role,
                updated_at,
            },
            role,
            unknown_role: false,
        }
    }

    #[test]
    fn a_new_user_takes_the_metadata_role_or_student() {
        use Role::*;
        assert_eq!(
            judge(None, MetadataRole::Known(Admin), 1),
            apply(Admin, Admin, 1)
        );
        assert_eq!(
            judge(None, MetadataRole::Missing, 1),
            apply(Student, Student, 1)
        );
        assert_eq!(
            judge(None, MetadataRole::Unknown, 1),
            Verdict::Apply {
                clerk: ClerkState {
                    role: Student,
                    updated_at: 1
                },
                role: Student,
                unknown_role: true
            }
        );
    }

    #[test]
    fn an_unknown_value_keeps_the_current_role() {
        let verdict = judge(
            known(Role::Instructor, Some((Role::Instructor, 1)), false),
            MetadataRole::Unknown,
            2,
        );
        assert!(matches!(
            verdict,
            Verdict::Apply {
                role: Role::Instructor,
                unknown_role: true,
                ..
            }
        ));
    }

    #[test]
    fn older_states_are_stale_and_deleted_users_stay_deleted() {
        let user = known(Role::Admin, Some((Role::Admin, 10)), false);
        assert_eq!(
            judge(user, MetadataRole::Known(Role::Student), 9),
            Verdict::Stale
        );
        let deleted = Some(Known {
            deleted: true,
            ..user.expect("some")
        });
        assert_eq!(
            judge(deleted, MetadataRole::Known(Role::Student), 11),
            Verdict::Deleted
        );
    }

    #[test]
    fn same_instant_with_another_role_is_a_conflict() {
        let user = known(Role::Admin, Some((Role::Admin, 10)), false);
        assert_eq!(
            judge(user, MetadataRole::Known(Role::Student), 10),
            Verdict::Conflict
        );
        assert_eq!(
            judge(user, MetadataRole::Known(Role::Admin), 10),
            apply(Role::Admin, Role::Admin, 10)
        );
    }

    #[test]
    fn a_reread_settles_a_conflict() {
        let user = known(Role::Admin, Some((Role::Admin, 10)), false);
        assert_eq!(
            judge_reread(user, MetadataRole::Known(Role::Student), 10),
            apply(Role::Student, Role::Student, 10)
        );
        assert_eq!(
            judge_reread(user, MetadataRole::Known(Role::Student), 9),
            Verdict::Stale
        );
    }

    #[test]
    fn a_pending_push_holds_the_intent_but_the_state_is_remembered() {
        let user = known(Role::Instructor, Some((Role::Student, 10)), true);
        assert_eq!(
            judge(user, MetadataRole::Known(Role::Admin), 11),
            apply(Role::Instructor, Role::Admin, 11)
        );
    }

    #[test]
    fn newest_prefers_the_later_state() {
        let early = ClerkState {
            role: Role::Admin,
            updated_at: 1,
        };
        let late = ClerkState {
            role: Role::Student,
            updated_at: 2,
        };
        assert_eq!(early.newest(Some(late)), late);
        assert_eq!(late.newest(Some(early)), late);
        assert_eq!(early.newest(None), early);
    }

    fn role() -> impl Strategy<Value = Role> {
        prop_oneof![
            Just(Role::Student),
            Just(Role::Instructor),
            Just(Role::Admin)
        ]
    }

    proptest! {
        /// Whatever order Clerk's states arrive in (with duplicates), and no
        /// push pending, the database ends at the newest state's role.
        #[test]
        fn any_delivery_order_ends_at_the_newest_state(
            roles in proptest::collection::vec(role(), 1..12),
            order in proptest::collection::vec(any::<proptest::sample::Index>(), 1..30),
        ) {
            // Clerk's timeline: state i at updated_at i+1.
            let timeline: Vec<ClerkState> = roles.iter().enumerate()
                .map(|(i, &role)| ClerkState { role, updated_at: i as i64 + 1 })
                .collect();
            let mut deliveries: Vec<ClerkState> = order.iter().map(|i| *i.get(&timeline)).collect();
            // The newest state is delivered at least once, somewhere.
            deliveries.push(*timeline.last().expect("non-empty"));
            let mut user: Option<Known> = None;
            for state in deliveries {
                if let Verdict::Apply { clerk, role, .. } =
                    judge(user, MetadataRole::Known(state.role), state.updated_at)
                {
                    user = Some(Known { role, clerk: Some(clerk), deleted: false, push_pending: false });
                }
            }
            let newest = timeline.last().expect("non-empty");
            prop_assert_eq!(user.map(|u| u.role), Some(newest.role));
        }
    }
}
