//! The two-way sync rules, as pure functions (DESIGN.md, "Echo and races").
//!
//! Per user we keep the newest Clerk state seen (role + Clerk's
//! `updated_at`), from webhooks and from our own pushes' answers. When no
//! push is pending, the database role is that newest state. While an admin's
//! push is pending, the newer intent wins by wall clock: a differing Clerk
//! state that is the newest seen, later than the admin's commit by more than
//! the clock-skew allowance, or within the allowance and lower in privilege,
//! cancels the push (unless it is already in flight, when Clerk's own order
//! settles it) and the database takes Clerk's role. Otherwise the state is
//! remembered and the push goes on.

use std::collections::BTreeMap;

use super::{Role, RoleSet};

/// How far Clerk's clock and ours may drift apart before the race rule
/// takes one side's word over the other's (`CLOCK_SKEW_ALLOWANCE_MS`).
pub const DEFAULT_CLOCK_SKEW_ALLOWANCE_MS: i64 = 2_000;

/// `public_metadata.role` as Clerk holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataRole {
    /// One of our three roles (after trimming and case-folding).
    Known(Role),
    /// No `role` key, `null`, or an empty string: the user is a STUDENT.
    Missing,
    /// A value we do not know; the current role is kept.
    Unknown,
}

impl MetadataRole {
    /// The role it means: STUDENT when there is none, `None` for a value we
    /// do not know.
    pub const fn role(self) -> Option<Role> {
        match self {
            Self::Known(role) => Some(role),
            Self::Missing => Some(Role::Student),
            Self::Unknown => None,
        }
    }
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

/// An admin's role change not yet acknowledged by Clerk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingPush {
    /// The role being pushed.
    pub role: Role,
    /// When the change was committed here, milliseconds since the epoch.
    pub committed_at: i64,
    /// Clerk's `updated_at` of the newest Clerk state known then: the admin
    /// had seen it, so it is not a newer intent.
    pub seen_at_commit: Option<i64>,
    /// A worker is sending it right now: only Clerk's answer settles it.
    pub in_flight: bool,
    /// Pushes of this user that Clerk may have applied without our
    /// recording its answer (a replica died in between, or no answer came).
    pub unrecorded: UnrecordedPushes,
}

/// Pushes whose answer from Clerk was never recorded: the roles they sent,
/// and the latest time (ms, our clock) Clerk could have applied one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnrecordedPushes {
    pub roles: RoleSet,
    pub until: Option<i64>,
}

impl UnrecordedPushes {
    pub const NONE: UnrecordedPushes = UnrecordedPushes {
        roles: RoleSet::EMPTY,
        until: None,
    };

    /// Whether `clerk` may be such a push's echo rather than a dashboard
    /// edit: its role was sent, no later than Clerk could have applied it
    /// (with `allowance_ms` for the clocks).
    pub fn may_have_written(self, clerk: ClerkState, allowance_ms: i64) -> bool {
        self.roles.contains(clerk.role)
            && self
                .until
                .is_none_or(|until| clerk.updated_at <= until.saturating_add(allowance_ms))
    }
}

/// How final a user's deletion is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tombstone {
    /// Clerk sent `user.deleted`: nothing brings the user back.
    Final,
    /// The drift audit or `reconcile` found the user gone from Clerk (its
    /// `user.deleted` lost, or Clerk answering wrongly): undone when Clerk,
    /// read afresh, shows the user again.
    Provisional,
}

/// What we know of a user before applying a Clerk state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredUser {
    /// The role in our database.
    pub role: Role,
    /// The newest Clerk state applied so far, if any.
    pub clerk: Option<ClerkState>,
    /// That state is what our own push produced.
    pub clerk_from_push: bool,
    /// Deleted here, and how finally.
    pub deleted: Option<Tombstone>,
    /// The admin's change waiting to reach Clerk, if any.
    pub pending: Option<PendingPush>,
}

impl StoredUser {
    /// The same user, with its pending push (if any) found in flight.
    pub fn with_push_in_flight(self) -> Self {
        Self {
            pending: self.pending.map(|pending| PendingPush {
                in_flight: true,
                ..pending
            }),
            ..self
        }
    }
}

/// What to do with a Clerk state (from a webhook or a re-read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateDecision {
    /// Store `clerk` as the newest Clerk state, refresh the profile and set
    /// the database role to `role` (which may be the current one).
    Apply {
        clerk: ClerkState,
        role: Role,
        /// The metadata held a value we do not know; `role` kept the current one.
        unknown_role: bool,
        /// The pending push is cancelled: Clerk's state is the newer intent.
        cancels_push: bool,
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
/// stored as `stored` (`None` for a user we have never seen).
/// `allowance_ms` is the clock-skew allowance between Clerk and us.
pub fn judge(
    stored: Option<StoredUser>,
    metadata: MetadataRole,
    updated_at: i64,
    allowance_ms: i64,
) -> StateDecision {
    judge_with(stored, metadata, updated_at, allowance_ms, false)
}

/// Like [`judge`], for a state just read back from Clerk after a
/// [`StateDecision::Conflict`]: Clerk's answer settles which role that instant had.
pub fn judge_reread(
    stored: Option<StoredUser>,
    metadata: MetadataRole,
    updated_at: i64,
    allowance_ms: i64,
) -> StateDecision {
    judge_with(stored, metadata, updated_at, allowance_ms, true)
}

fn judge_with(
    stored: Option<StoredUser>,
    metadata: MetadataRole,
    updated_at: i64,
    allowance_ms: i64,
    reread: bool,
) -> StateDecision {
    let fallback = stored.map_or(Role::Student, |k| k.role);
    let (incoming, unknown_role) = match metadata.role() {
        Some(role) => (role, false),
        None => (fallback, true),
    };
    let clerk = ClerkState {
        role: incoming,
        updated_at,
    };
    let Some(stored) = stored else {
        return StateDecision::Apply {
            clerk,
            role: incoming,
            unknown_role,
            cancels_push: false,
        };
    };
    match stored.deleted {
        // Read from Clerk just now, the user exists: it comes back, as new.
        Some(Tombstone::Provisional) if reread => {
            return judge_with(None, metadata, updated_at, allowance_ms, reread);
        }
        // A webhook may be older than the deletion: only a read settles it.
        Some(_) => return StateDecision::Deleted,
        None => {}
    }
    match stored.clerk {
        Some(applied) if updated_at < applied.updated_at => return StateDecision::Stale,
        // (An unknown value at the same instant is the state we already kept.)
        Some(applied)
            if updated_at == applied.updated_at
                && incoming != applied.role
                && !unknown_role
                && !reread =>
        {
            return StateDecision::Conflict;
        }
        _ => {}
    }
    let Some(pending) = stored.pending else {
        return StateDecision::Apply {
            clerk,
            role: incoming,
            unknown_role,
            cancels_push: false,
        };
    };
    // The echo of our own push cancels nothing.
    let echo = stored.clerk_from_push && stored.clerk == Some(clerk);
    let cancels_push = !echo && !unknown_role && cancels(clerk, pending, allowance_ms);
    StateDecision::Apply {
        clerk,
        role: if cancels_push { incoming } else { stored.role },
        unknown_role,
        cancels_push,
    }
}

/// Whether Clerk's newest state `clerk` is a newer intent than the pending
/// push: a differing role, later than the admin's commit by more than the
/// allowance, or within it and lower in privilege, while the push is not
/// yet in flight. (The caller has checked that `clerk` is the newest state.)
pub fn cancels(clerk: ClerkState, pending: PendingPush, allowance_ms: i64) -> bool {
    let seen_before = pending
        .seen_at_commit
        .is_some_and(|seen| clerk.updated_at <= seen);
    let maybe_echo = pending.unrecorded.may_have_written(clerk, allowance_ms);
    if pending.in_flight || clerk.role == pending.role || seen_before || maybe_echo {
        return false;
    }
    // Saturating: `updated_at` comes from outside and may be anything.
    let after_commit = clerk.updated_at.saturating_sub(pending.committed_at);
    after_commit > allowance_ms
        || (after_commit.saturating_abs() <= allowance_ms && clerk.role < pending.role)
}

/// The counter deltas of a user moving from one role to another (`None`:
/// the user appears or disappears), in the order every transaction updates
/// counters (by role name), so that two never wait on each other in a cycle.
pub fn count_deltas(from: Option<Role>, to: Option<Role>) -> Vec<(Role, i64)> {
    let mut deltas: Vec<(Role, i64)> = from
        .map(|role| (role, -1))
        .into_iter()
        .chain(to.map(|role| (role, 1)))
        .collect();
    deltas.sort_by_key(|(role, _)| role.as_str());
    deltas
}

/// The role counter moves of one transaction, summed per counter row (a
/// role's `shard`) and taken in the one order every transaction takes
/// counter rows in: by role name, then shard. Moves that cancel out touch
/// no row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountDeltas(BTreeMap<(&'static str, i16), (Role, i64)>);

impl CountDeltas {
    /// Counts a user of counter shard `shard` moving from one role to
    /// another (`None`: the user appears or disappears).
    pub fn add(&mut self, shard: i16, from: Option<Role>, to: Option<Role>) {
        for (role, delta) in count_deltas(from, to) {
            self.0.entry((role.as_str(), shard)).or_insert((role, 0)).1 += delta;
        }
    }

    /// `(role, shard, delta)` in lock order, without the rows that net zero.
    pub fn in_lock_order(&self) -> impl Iterator<Item = (Role, i16, i64)> + '_ {
        self.0
            .iter()
            .filter(|(_, (_, delta))| *delta != 0)
            .map(|((_, shard), (role, delta))| (*role, *shard, *delta))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const ALLOWANCE: i64 = 2_000;

    fn stored(
        role: Role,
        clerk: Option<(Role, i64)>,
        pending: Option<PendingPush>,
    ) -> Option<StoredUser> {
        Some(StoredUser {
            role,
            clerk: clerk.map(|(role, updated_at)| ClerkState { role, updated_at }),
            clerk_from_push: false,
            deleted: None,
            pending,
        })
    }

    fn pending(role: Role, committed_at: i64) -> Option<PendingPush> {
        Some(PendingPush {
            role,
            committed_at,
            seen_at_commit: None,
            in_flight: false,
            unrecorded: UnrecordedPushes::NONE,
        })
    }

    fn judge(stored: Option<StoredUser>, metadata: MetadataRole, updated_at: i64) -> StateDecision {
        super::judge(stored, metadata, updated_at, ALLOWANCE)
    }

    fn judge_reread(
        stored: Option<StoredUser>,
        metadata: MetadataRole,
        updated_at: i64,
    ) -> StateDecision {
        super::judge_reread(stored, metadata, updated_at, ALLOWANCE)
    }

    fn apply(role: Role, clerk_role: Role, updated_at: i64) -> StateDecision {
        StateDecision::Apply {
            clerk: ClerkState {
                role: clerk_role,
                updated_at,
            },
            role,
            unknown_role: false,
            cancels_push: false,
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
            StateDecision::Apply {
                clerk: ClerkState {
                    role: Student,
                    updated_at: 1
                },
                role: Student,
                unknown_role: true,
                cancels_push: false,
            }
        );
    }

    #[test]
    fn an_unknown_value_keeps_the_current_role() {
        let decision = judge(
            stored(Role::Instructor, Some((Role::Instructor, 1)), None),
            MetadataRole::Unknown,
            2,
        );
        assert!(matches!(
            decision,
            StateDecision::Apply {
                role: Role::Instructor,
                unknown_role: true,
                ..
            }
        ));
    }

    #[test]
    fn older_states_are_stale_and_deleted_users_stay_deleted() {
        let user = stored(Role::Admin, Some((Role::Admin, 10)), None);
        assert_eq!(
            judge(user, MetadataRole::Known(Role::Student), 9),
            StateDecision::Stale
        );
        let deleted = Some(StoredUser {
            deleted: Some(Tombstone::Final),
            ..user.expect("some")
        });
        assert_eq!(
            judge(deleted, MetadataRole::Known(Role::Student), 11),
            StateDecision::Deleted
        );
        assert_eq!(
            judge_reread(deleted, MetadataRole::Known(Role::Student), 11),
            StateDecision::Deleted
        );
    }

    #[test]
    fn a_provisional_tombstone_is_undone_only_by_a_fresh_read_of_clerk() {
        let user = stored(Role::Admin, Some((Role::Admin, 10)), None);
        let deleted = Some(StoredUser {
            deleted: Some(Tombstone::Provisional),
            ..user.expect("some")
        });
        assert_eq!(
            judge(deleted, MetadataRole::Known(Role::Instructor), 11),
            StateDecision::Deleted
        );
        // Even a state older than the one applied: Clerk holds it now.
        assert_eq!(
            judge_reread(deleted, MetadataRole::Known(Role::Instructor), 9),
            StateDecision::Apply {
                clerk: ClerkState {
                    role: Role::Instructor,
                    updated_at: 9
                },
                role: Role::Instructor,
                unknown_role: false,
                cancels_push: false,
            }
        );
        assert!(matches!(
            judge_reread(deleted, MetadataRole::Missing, 11),
            StateDecision::Apply {
                role: Role::Student,
                ..
            }
        ));
    }

    #[test]
    fn same_instant_with_another_role_is_a_conflict() {
        let user = stored(Role::Admin, Some((Role::Admin, 10)), None);
        assert_eq!(
            judge(user, MetadataRole::Known(Role::Student), 10),
            StateDecision::Conflict
        );
        assert_eq!(
            judge(user, MetadataRole::Known(Role::Admin), 10),
            apply(Role::Admin, Role::Admin, 10)
        );
    }

    #[test]
    fn a_reread_settles_a_conflict() {
        let user = stored(Role::Admin, Some((Role::Admin, 10)), None);
        assert_eq!(
            judge_reread(user, MetadataRole::Known(Role::Student), 10),
            apply(Role::Student, Role::Student, 10)
        );
        assert_eq!(
            judge_reread(user, MetadataRole::Known(Role::Student), 9),
            StateDecision::Stale
        );
    }

    #[test]
    fn an_older_clerk_state_leaves_the_pending_push_alone_but_is_remembered() {
        // Admin committed INSTRUCTOR at 10 s; Clerk says ADMIN at 5 s.
        let user = stored(
            Role::Instructor,
            Some((Role::Student, 1_000)),
            pending(Role::Instructor, 10_000),
        );
        assert_eq!(
            judge(user, MetadataRole::Known(Role::Admin), 5_000),
            apply(Role::Instructor, Role::Admin, 5_000)
        );
    }

    #[test]
    fn a_dashboard_edit_after_the_allowance_cancels_the_push() {
        let user = stored(
            Role::Admin,
            Some((Role::Student, 1_000)),
            pending(Role::Admin, 10_000),
        );
        for role in [Role::Student, Role::Instructor] {
            assert_eq!(
                judge(user, MetadataRole::Known(role), 12_001),
                StateDecision::Apply {
                    clerk: ClerkState {
                        role,
                        updated_at: 12_001
                    },
                    role,
                    unknown_role: false,
                    cancels_push: true,
                }
            );
        }
        // Even a promotion: it is the newer intent.
        let demoting = stored(
            Role::Student,
            Some((Role::Admin, 1_000)),
            pending(Role::Student, 10_000),
        );
        assert!(matches!(
            judge(demoting, MetadataRole::Known(Role::Admin), 12_001),
            StateDecision::Apply {
                role: Role::Admin,
                cancels_push: true,
                ..
            }
        ));
    }

    #[test]
    fn within_the_allowance_the_lower_role_wins() {
        let promoting = stored(
            Role::Admin,
            Some((Role::Student, 1_000)),
            pending(Role::Admin, 10_000),
        );
        for at in [8_000, 10_000, 12_000] {
            assert!(
                matches!(
                    judge(promoting, MetadataRole::Known(Role::Student), at),
                    StateDecision::Apply {
                        role: Role::Student,
                        cancels_push: true,
                        ..
                    }
                ),
                "{at}"
            );
        }
        let demoting = stored(
            Role::Student,
            Some((Role::Admin, 1_000)),
            pending(Role::Student, 10_000),
        );
        for at in [8_000, 10_000, 12_000] {
            assert_eq!(
                judge(demoting, MetadataRole::Known(Role::Admin), at),
                apply(Role::Student, Role::Admin, at),
                "{at}: a racing promotion never undoes a demotion"
            );
        }
    }

    #[test]
    fn a_state_the_admin_had_seen_cancels_nothing() {
        // The admin promoted at 10 s having seen STUDENT at 9.5 s: within
        // the allowance, but no race.
        let user = stored(
            Role::Admin,
            Some((Role::Student, 9_500)),
            Some(PendingPush {
                role: Role::Admin,
                committed_at: 10_000,
                seen_at_commit: Some(9_500),
                in_flight: false,
                unrecorded: UnrecordedPushes::NONE,
            }),
        );
        assert_eq!(
            judge(user, MetadataRole::Known(Role::Student), 9_500),
            apply(Role::Admin, Role::Student, 9_500)
        );
        assert!(matches!(
            judge(user, MetadataRole::Known(Role::Student), 9_501),
            StateDecision::Apply {
                cancels_push: true,
                ..
            }
        ));
    }

    #[test]
    fn a_possible_echo_of_an_unrecorded_push_cancels_nothing() {
        // A push of STUDENT may have landed in Clerk by 12 s, unrecorded
        // (its replica died); the admin then promoted to ADMIN at 10 s.
        let pending = |roles, until| {
            Some(PendingPush {
                role: Role::Admin,
                committed_at: 10_000,
                seen_at_commit: Some(1_000),
                in_flight: false,
                unrecorded: UnrecordedPushes { roles, until },
            })
        };
        let after = 10_000 + ALLOWANCE + 1;
        let student = RoleSet::only(Role::Student);
        let echo = stored(
            Role::Admin,
            Some((Role::Admin, 1_000)),
            pending(student, Some(12_000)),
        );
        assert_eq!(
            judge(echo, MetadataRole::Known(Role::Student), after),
            apply(Role::Admin, Role::Student, after),
            "the echo is remembered, and the push goes on"
        );
        // A role no unrecorded push sent is a dashboard edit...
        assert!(matches!(
            judge(echo, MetadataRole::Known(Role::Instructor), after),
            StateDecision::Apply {
                cancels_push: true,
                ..
            }
        ));
        // ...and so is the same role, later than Clerk could have applied it.
        let later = 12_000 + ALLOWANCE + 1;
        assert!(matches!(
            judge(echo, MetadataRole::Known(Role::Student), later),
            StateDecision::Apply {
                cancels_push: true,
                ..
            }
        ));
        let edit = stored(
            Role::Admin,
            Some((Role::Admin, 1_000)),
            pending(RoleSet::EMPTY, None),
        );
        assert!(matches!(
            judge(edit, MetadataRole::Known(Role::Student), after),
            StateDecision::Apply {
                cancels_push: true,
                ..
            }
        ));
    }

    #[test]
    fn a_push_in_flight_is_left_to_clerk() {
        let in_flight = Some(PendingPush {
            role: Role::Admin,
            committed_at: 10_000,
            seen_at_commit: None,
            in_flight: true,
            unrecorded: UnrecordedPushes::NONE,
        });
        let user = stored(Role::Admin, Some((Role::Student, 1_000)), in_flight);
        assert_eq!(
            judge(user, MetadataRole::Known(Role::Student), 60_000),
            apply(Role::Admin, Role::Student, 60_000)
        );
    }

    #[test]
    fn echoes_and_unknown_values_cancel_nothing() {
        // The state our own earlier push produced, seen again.
        let ours = stored(
            Role::Admin,
            Some((Role::Student, 11_000)),
            pending(Role::Admin, 10_000),
        )
        .map(|stored| StoredUser {
            clerk_from_push: true,
            ..stored
        });
        assert_eq!(
            judge(ours, MetadataRole::Known(Role::Student), 11_000),
            apply(Role::Admin, Role::Student, 11_000)
        );
        // The same state from a dashboard edit, seen again (a retry's read):
        // within the allowance the lower role still wins.
        let theirs = stored(
            Role::Admin,
            Some((Role::Student, 11_000)),
            pending(Role::Admin, 10_000),
        );
        assert!(matches!(
            judge(theirs, MetadataRole::Known(Role::Student), 11_000),
            StateDecision::Apply {
                role: Role::Student,
                cancels_push: true,
                ..
            }
        ));
        let user = stored(
            Role::Admin,
            Some((Role::Student, 1_000)),
            pending(Role::Admin, 10_000),
        );
        assert!(matches!(
            judge(user, MetadataRole::Unknown, 60_000),
            StateDecision::Apply {
                role: Role::Admin,
                cancels_push: false,
                unknown_role: true,
                ..
            }
        ));
    }

    #[test]
    fn extreme_timestamps_do_not_overflow() {
        let user = stored(Role::Admin, None, pending(Role::Admin, i64::MIN));
        assert!(matches!(
            judge(user, MetadataRole::Known(Role::Student), i64::MAX),
            StateDecision::Apply {
                cancels_push: true,
                ..
            }
        ));
        let user = stored(Role::Admin, None, pending(Role::Admin, i64::MAX));
        assert!(matches!(
            judge(user, MetadataRole::Known(Role::Instructor), i64::MIN),
            StateDecision::Apply {
                cancels_push: false,
                ..
            }
        ));
    }

    #[test]
    fn count_moves_sum_per_row_in_lock_order() {
        use Role::*;
        let mut deltas = CountDeltas::default();
        deltas.add(7, None, Some(Student));
        deltas.add(2, Some(Student), Some(Admin));
        deltas.add(7, Some(Student), Some(Instructor));
        deltas.add(2, Some(Admin), Some(Student));
        deltas.add(0, Some(Instructor), None);
        assert_eq!(
            deltas.in_lock_order().collect::<Vec<_>>(),
            // ADMIN/2 and STUDENT/2 net zero; STUDENT/7 nets +1 -1 = 0.
            vec![(Instructor, 0, -1), (Instructor, 7, 1)]
        );
        deltas.add(3, None, Some(Student));
        deltas.add(3, None, Some(Admin));
        assert_eq!(
            deltas.in_lock_order().collect::<Vec<_>>(),
            vec![
                (Admin, 3, 1),
                (Instructor, 0, -1),
                (Instructor, 7, 1),
                (Student, 3, 1)
            ]
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
            let mut user: Option<StoredUser> = None;
            for state in deliveries {
                if let StateDecision::Apply { clerk, role, .. } =
                    judge(user, MetadataRole::Known(state.role), state.updated_at)
                {
                    user = Some(StoredUser { role, clerk: Some(clerk), clerk_from_push: false, deleted: None, pending: None });
                }
            }
            let newest = timeline.last().expect("non-empty");
            prop_assert_eq!(user.map(|u| u.role), Some(newest.role));
        }
    }
}
