//! The audit of role changes: one `role_changes` row and one log line per
//! change, the line written only once its transaction has committed.

use crate::domain::{ClerkUserId, Role, RoleSource};

/// One role change, logged once its transaction has committed.
struct RoleChangeLine {
    id: ClerkUserId,
    from: Option<Role>,
    /// `None`: the user was deleted.
    to: Option<Role>,
    source: RoleSource,
    actor: Option<String>,
}

impl RoleChangeLine {
    /// The one log line of every role change, whatever its source.
    fn log(&self) {
        tracing::info!(
            user.id = %self.id,
            old_role = self.from.map_or("none", Role::as_str),
            new_role = self.to.map_or("none", Role::as_str),
            source = self.source.as_str(),
            actor = self.actor.as_deref(),
            "role changed"
        );
    }
}

tokio::task_local! {
    /// Role changes made inside the transaction now running on this task.
    static UNCOMMITTED: std::cell::RefCell<Vec<RoleChangeLine>>;
}

/// Notes a role change for the log (`to` `None`: a deletion): held until
/// [`after_commit`] sees its transaction succeed, so a rolled-back change
/// is never logged as made.
pub fn log_role_change(
    id: &ClerkUserId,
    from: Option<Role>,
    to: Option<Role>,
    source: RoleSource,
    actor: Option<&str>,
) {
    hold_or_log(RoleChangeLine {
        id: id.clone(),
        from,
        to,
        source,
        actor: actor.map(str::to_owned),
    });
}

/// Holds the line for the transaction running on this task, if any; else
/// the change is already durable and is logged now.
fn hold_or_log(line: RoleChangeLine) {
    if UNCOMMITTED.try_with(|_| ()).is_ok() {
        UNCOMMITTED.with(|lines| lines.borrow_mut().push(line));
    } else {
        line.log();
    }
}

/// Runs `transaction` (a future that commits or rolls back) and logs the
/// role changes it noted only when it returns `Ok`. Nested inside another,
/// the lines are handed to the outer one, which logs them at its commit.
pub async fn after_commit<T, E>(transaction: impl Future<Output = Result<T, E>>) -> Result<T, E> {
    let (result, lines) = UNCOMMITTED
        .scope(std::cell::RefCell::new(Vec::new()), async {
            let result = transaction.await;
            (result, UNCOMMITTED.with(|lines| lines.take()))
        })
        .await;
    if result.is_ok() {
        lines.into_iter().for_each(hold_or_log);
    }
    result
}
