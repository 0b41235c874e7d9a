//! The kinds of problem a client may switch on, each with a stable `type`
//! (`/problems/{slug}`, a URI reference under the service) that the
//! service serves as a short description. Where the status says it all
//! (401, 403, 405, 408, 413 and the like) the type is `about:blank`.

use actix_web::http::StatusCode;

/// The `type` of a problem whose status says it all.
pub const ABOUT_BLANK: &str = "about:blank";

/// A kind of problem a client may tell apart from others of its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemType {
    /// A role outside STUDENT, INSTRUCTOR, ADMIN.
    InvalidRole,
    /// A bulk entry's `userId` that cannot be a Clerk user id.
    InvalidUserId,
    /// A user named twice in one bulk change.
    DuplicateUser,
    /// A bulk change with no entries, or more than it takes.
    ChangeCount,
    /// A query parameter outside what it allows.
    InvalidParameter,
    /// The change would leave no admin.
    LastAdmin,
    /// No live user has this id.
    UserNotFound,
    /// The token is valid, but its user is not known here.
    UnknownCaller,
    /// Neither `CLERK_JWT_KEY` nor `CLERK_SECRET_KEY` is set.
    AuthNotConfigured,
    /// Clerk's signing keys cannot be fetched right now.
    KeysUnavailable,
    /// The database is unreachable or busy.
    DatabaseUnavailable,
    /// `CLERK_WEBHOOK_SECRET` is not set.
    WebhookNotConfigured,
    /// Too many webhooks at once.
    WebhooksBusy,
    /// A webhook from another Clerk instance than the database's.
    WrongInstance,
    /// The service is not ready to serve (readiness only).
    NotReady,
}

impl ProblemType {
    /// Every kind, in the order the document lists them.
    pub const ALL: [ProblemType; 15] = [
        Self::InvalidRole,
        Self::InvalidUserId,
        Self::DuplicateUser,
        Self::ChangeCount,
        Self::InvalidParameter,
        Self::LastAdmin,
        Self::UserNotFound,
        Self::UnknownCaller,
        Self::AuthNotConfigured,
        Self::KeysUnavailable,
        Self::DatabaseUnavailable,
        Self::WebhookNotConfigured,
        Self::WebhooksBusy,
        Self::WrongInstance,
        Self::NotReady,
    ];

    /// The last segment of its `type`.
    pub const fn slug(self) -> &'static str {
        match self {
            Self::InvalidRole => "invalid-role",
            Self::InvalidUserId => "invalid-user-id",
            Self::DuplicateUser => "duplicate-user",
            Self::ChangeCount => "change-count",
            Self::InvalidParameter => "invalid-parameter",
            Self::LastAdmin => "last-admin",
            Self::UserNotFound => "user-not-found",
            Self::UnknownCaller => "unknown-caller",
            Self::AuthNotConfigured => "auth-not-configured",
            Self::KeysUnavailable => "keys-unavailable",
            Self::DatabaseUnavailable => "database-unavailable",
            Self::WebhookNotConfigured => "webhook-not-configured",
            Self::WebhooksBusy => "webhooks-busy",
            Self::WrongInstance => "wrong-instance",
            Self::NotReady => "not-ready",
        }
    }

    /// Its `type`: a URI reference under the service.
    pub fn uri(self) -> String {
        format!("/problems/{}", self.slug())
    }

    pub fn from_slug(slug: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.slug() == slug)
    }

    pub const fn status(self) -> StatusCode {
        match self {
            Self::InvalidRole
            | Self::InvalidUserId
            | Self::DuplicateUser
            | Self::ChangeCount
            | Self::InvalidParameter
            | Self::WrongInstance => StatusCode::UNPROCESSABLE_ENTITY,
            Self::LastAdmin => StatusCode::CONFLICT,
            Self::UserNotFound => StatusCode::NOT_FOUND,
            Self::UnknownCaller => StatusCode::UNAUTHORIZED,
            Self::AuthNotConfigured
            | Self::KeysUnavailable
            | Self::DatabaseUnavailable
            | Self::WebhookNotConfigured
            | Self::WebhooksBusy
            | Self::NotReady => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Its `title`: the same for every problem of the kind.
    pub const fn title(self) -> &'static str {
        match self {
            Self::InvalidRole => "Not a role",
            Self::InvalidUserId => "Not a Clerk user id",
            Self::DuplicateUser => "A user named twice",
            Self::ChangeCount => "Too few or too many changes",
            Self::InvalidParameter => "A query parameter out of range",
            Self::LastAdmin => "It would leave no admin",
            Self::UserNotFound => "No such user",
            Self::UnknownCaller => "The token's user is not known here",
            Self::AuthNotConfigured => "Admin authentication is not configured",
            Self::KeysUnavailable => "Clerk's signing keys are unavailable",
            Self::DatabaseUnavailable => "The database is unavailable",
            Self::WebhookNotConfigured => "The webhook is not configured",
            Self::WebhooksBusy => "Too many webhooks at once",
            Self::WrongInstance => "From another Clerk instance",
            Self::NotReady => "Not ready",
        }
    }

    /// What it means and what to do, served at its `type`.
    pub const fn description(self) -> &'static str {
        match self {
            Self::InvalidRole => {
                "The role is not one of STUDENT, INSTRUCTOR, ADMIN (exactly, in capitals). \
                 `allowedValues` lists them. Nothing was changed."
            }
            Self::InvalidUserId => {
                "An entry's `userId` cannot be a Clerk user id (letters, digits, `_` and `-`, \
                 at most 128). `detail` names the entry. Nothing was changed."
            }
            Self::DuplicateUser => {
                "One bulk change names a user twice; send one entry per user. `detail` names \
                 the entry. Nothing was changed."
            }
            Self::ChangeCount => {
                "A bulk change holds 1 to 500 entries; split a larger one. Nothing was \
                 changed."
            }
            Self::InvalidParameter => {
                "A query parameter is well-formed but outside what it allows (a limit, a \
                 search's length, an outcome, a time range); `detail` says which."
            }
            Self::LastAdmin => {
                "The change would leave no live ADMIN. Promote another user first, then \
                 demote this one. Nothing was changed."
            }
            Self::UserNotFound => {
                "No live user has this id here (it never synced, or it was deleted). A user \
                 who has just signed up appears once Clerk's webhook arrives."
            }
            Self::UnknownCaller => {
                "The session token is valid, but its user is not in this service's database \
                 (its `user.created` webhook has not arrived, or the user was deleted). Run \
                 `clerk-role-sync backfill`, or wait for the webhook."
            }
            Self::AuthNotConfigured => {
                "The service cannot verify session tokens: set CLERK_JWT_KEY (the instance's \
                 PEM public key) or CLERK_SECRET_KEY (for Clerk's JWKS) and restart it."
            }
            Self::KeysUnavailable => {
                "Clerk's JWKS could not be fetched, so no session token can be verified now. \
                 Retry after `Retry-After` seconds."
            }
            Self::DatabaseUnavailable => {
                "The database is unreachable, or a statement waited too long for a lock. \
                 Nothing was changed; retry shortly."
            }
            Self::WebhookNotConfigured => {
                "CLERK_WEBHOOK_SECRET is not set, so no webhook can be verified. Svix keeps \
                 the messages and retries them once it is set."
            }
            Self::WebhooksBusy => {
                "Too many webhook bodies are being received at once. Retry after \
                 `Retry-After` seconds (Svix does)."
            }
            Self::WrongInstance => {
                "The signed event names another Clerk instance than the one this service's \
                 database is bound to. It was not applied. Point the webhook at the service of \
                 that instance, or see `clerk-role-sync rebind-instance`."
            }
            Self::NotReady => {
                "The service is shutting down, its push worker has stopped going round its \
                 loop, or its database did not answer in time; `detail` says which."
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_slug_and_is_found_by_it() {
        let mut slugs: Vec<&str> = ProblemType::ALL.iter().map(|k| k.slug()).collect();
        slugs.sort_unstable();
        slugs.dedup();
        assert_eq!(slugs.len(), ProblemType::ALL.len());
        for kind in ProblemType::ALL {
            assert_eq!(ProblemType::from_slug(kind.slug()), Some(kind));
            assert!(kind.status().is_client_error() || kind.status().is_server_error());
        }
        assert_eq!(ProblemType::from_slug("about:blank"), None);
    }
}
