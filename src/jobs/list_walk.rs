//! The walk of Clerk's user list that `backfill` and the drift audit share:
//! a stream of pages, oldest user first, paging with `starting_after`
//! (never offsets), each request paced and retried by
//! [`call_clerk`](super::retry::call_clerk). Where a walk resumes from, and
//! what it keeps of each page, is its caller's.

use std::time::Duration;

use futures_util::Stream;
use futures_util::stream;

use super::ClerkBudget;
use super::retry::call_clerk;
use crate::clerk::{ClerkClient, ClerkError, ClerkUser};

/// Users per page: Clerk's maximum.
pub const PAGE_SIZE: usize = 500;

/// How a walk goes: whom it asks, at what pace, and how often a refused
/// cursor may start it over.
#[derive(Clone, Copy)]
pub struct ListWalk<'a> {
    pub client: &'a ClerkClient,
    pub budget: &'a ClerkBudget,
    /// Longest wait before a retry, whatever Clerk's `Retry-After` says.
    pub max_wait: Duration,
    /// Times the walk starts over from the first page when Clerk refuses its
    /// cursor (the user it names deleted meanwhile), before the refusal
    /// ends it; 0: the first refusal ends it.
    pub restarts: u32,
}

/// What a walk yields.
#[derive(Debug)]
pub enum Step {
    /// The next page; `last`: the walk ends with it (it may be empty).
    Page { users: Vec<ClerkUser>, last: bool },
    /// Clerk refused the cursor with `status`: the next page is the first.
    StartedOver { status: u16 },
}

/// Where a walk stands between two pages.
struct Position {
    after: Option<String>,
    restarts_left: u32,
    ended: bool,
}

impl<'a> ListWalk<'a> {
    /// The pages after the user `after` (from the first when `None`), to the
    /// end of the list. An error ends the walk.
    pub fn pages(self, after: Option<String>) -> impl Stream<Item = anyhow::Result<Step>> + 'a {
        let start = Position {
            after,
            restarts_left: self.restarts,
            ended: false,
        };
        stream::try_unfold(start, move |position| self.next(position))
    }

    async fn next(self, mut position: Position) -> anyhow::Result<Option<(Step, Position)>> {
        if position.ended {
            return Ok(None);
        }
        let after = position.after.as_deref();
        let listed = call_clerk(self.budget, self.max_wait, || {
            self.client.list_users(PAGE_SIZE, after)
        })
        .await;
        let users = match listed {
            Ok(users) => users,
            Err(ClerkError::Refused { status, .. })
                if after.is_some()
                    && status != 401
                    && status != 403
                    && position.restarts_left > 0 =>
            {
                position.restarts_left -= 1;
                position.after = None;
                return Ok(Some((Step::StartedOver { status }, position)));
            }
            Err(error) => return Err(error.into()),
        };
        ensure_advances(after, &users)?;
        let last = users.len() < PAGE_SIZE;
        if let Some(user) = users.last() {
            position.after = Some(user.id.clone());
        }
        position.ended = last;
        Ok(Some((Step::Page { users, last }, position)))
    }
}

/// Stops a walk whose cursor does not move (Clerk answering the same page
/// again, or one that starts with the user it was to start after), which
/// would otherwise loop for ever.
fn ensure_advances(after: Option<&str>, page: &[ClerkUser]) -> anyhow::Result<()> {
    let repeats = after.is_some_and(|after| page.iter().any(|user| user.id == after));
    if repeats {
        anyhow::bail!(
            "Clerk's user list did not advance past {} (the page starts over or repeats); stopping",
            after.unwrap_or_default()
        );
    }
    Ok(())
}
