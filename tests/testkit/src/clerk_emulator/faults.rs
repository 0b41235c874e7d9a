//! Clerk misbehaving on demand: error statuses (5xx and others) and 429s
//! with `Retry-After` for the next requests to users, slow requests and
//! slow answers, a per-instance rate limit as Clerk enforces one, a user
//! list that ignores or refuses cursors or is cut short, users Clerk does
//! not show, and the instance or the JWKS down.
//! The router and the user list read them where each takes effect.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::ClerkEmulator;
use super::router::Reply;

/// An answer given instead of the real one, with no effect.
#[derive(Clone, Debug)]
pub(super) enum Fault {
    Status(u16),
    /// 429 with this `Retry-After` value, exactly as given.
    RateLimited(String),
}

/// The faults set on the instance.
#[derive(Default)]
pub(super) struct Faults {
    /// Answered, one each, by the next requests to `/v1/users...`.
    pub(super) next: VecDeque<Fault>,
    /// Requests to users wait this long before taking effect and answering.
    pub(super) delay: Duration,
    /// Requests to users are applied at once and answered this much later.
    pub(super) answer_delay: Duration,
    /// `GET /v1/instance` answers 503 while set.
    pub(super) instance_down: bool,
    /// `GET /v1/jwks` answers 503 while set.
    pub(super) jwks_down: bool,
    /// `GET /v1/users` ignores `starting_after` (a broken proxy or cache).
    pub(super) ignore_cursor: bool,
    /// The next `GET /v1/users` with `starting_after` refuses it, as Clerk
    /// refuses a cursor whose user was deleted.
    pub(super) refuse_cursor: bool,
    /// `GET /v1/users` shows at most this many users in all (a truncated
    /// or wrong answer).
    pub(super) list_cap: Option<usize>,
    /// Users Clerk does not show for now: left out of the list, 404 to
    /// lookups and writes.
    pub(super) hidden: HashSet<String>,
    /// The instance's rate limit on requests to users, if enforced.
    pub(super) rate_limit: Option<RateLimit>,
}

/// At most `requests` requests to users within any `window`, as Clerk
/// limits an instance: one more answers 429, with `Retry-After` the whole
/// seconds until the oldest of them leaves the window. Refused requests do
/// not count.
pub(super) struct RateLimit {
    requests: usize,
    window: Duration,
    /// When the requests let through within the last `window` came.
    recent: VecDeque<Instant>,
}

impl RateLimit {
    /// Counts a request at `now` against the limit; the 429 to answer
    /// instead when it is over.
    pub(super) fn admit(&mut self, now: Instant) -> Option<Fault> {
        while self
            .recent
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= self.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() < self.requests {
            self.recent.push_back(now);
            return None;
        }
        let oldest = *self.recent.front()?;
        let free_in = (oldest + self.window).saturating_duration_since(now);
        let seconds = free_in.as_secs() + u64::from(free_in.subsec_nanos() > 0);
        Some(Fault::RateLimited(seconds.max(1).to_string()))
    }
}

impl Reply {
    /// Clerk's answer for `fault`, with its error body.
    pub(super) fn fault(fault: Fault) -> Self {
        match fault {
            Fault::RateLimited(retry_after) => Self {
                retry_after: Some(retry_after),
                ..Self::error(
                    429,
                    "too_many_requests",
                    "Too Many Requests",
                    "Too many requests, retry later",
                )
            },
            Fault::Status(status) => {
                let code = match status {
                    400 => "bad_request",
                    401 => "authentication_invalid",
                    403 => "authorization_invalid",
                    404 => "resource_not_found",
                    422 => "form_param_format_invalid",
                    429 => "too_many_requests",
                    500.. => "internal_clerk_error",
                    _ => "request_failed",
                };
                Self::error(
                    status,
                    code,
                    "injected failure",
                    &format!("The Clerk emulator was told to answer {status}."),
                )
            }
        }
    }
}

/// Faults to inject: each holds until changed or used up.
impl ClerkEmulator {
    /// While `down`, `GET /v1/instance` answers 503 (Clerk unreachable for
    /// that call).
    pub fn set_instance_down(&self, down: bool) {
        self.shared.lock().faults.instance_down = down;
    }

    /// While `down`, `GET /v1/jwks` answers 503.
    pub fn set_jwks_down(&self, down: bool) {
        self.shared.lock().faults.jwks_down = down;
    }

    /// The next `count` requests to `/v1/users...` answer `status` with a
    /// Clerk error body and no effect.
    pub fn fail_next(&self, count: usize, status: u16) {
        assert!(
            (400..=599).contains(&status),
            "fail_next takes an error status, not {status}"
        );
        let mut state = self.shared.lock();
        state
            .faults
            .next
            .extend(std::iter::repeat_n(Fault::Status(status), count));
    }

    /// The next `count` requests to `/v1/users...` answer 429 with
    /// `Retry-After: retry_after_secs` and no effect.
    pub fn rate_limit_next(&self, count: usize, retry_after_secs: u64) {
        self.rate_limit_next_with(count, &retry_after_secs.to_string());
    }

    /// Like [`rate_limit_next`](Self::rate_limit_next), with any
    /// `Retry-After` value (an HTTP date, a number too large for a clock).
    pub fn rate_limit_next_with(&self, count: usize, retry_after: &str) {
        let mut state = self.shared.lock();
        state.faults.next.extend(std::iter::repeat_n(
            Fault::RateLimited(retry_after.to_owned()),
            count,
        ));
    }

    /// From now on, at most `requests` requests to `/v1/users...` within
    /// any `window`; one more answers 429 with `Retry-After` and has no
    /// effect ([`lift_rate_limit`](Self::lift_rate_limit) ends it).
    pub fn enforce_rate_limit(&self, requests: usize, window: Duration) {
        assert!(requests > 0, "a rate limit lets some requests through");
        self.shared.lock().faults.rate_limit = Some(RateLimit {
            requests,
            window,
            recent: VecDeque::new(),
        });
    }

    /// Stops enforcing the rate limit.
    pub fn lift_rate_limit(&self) {
        self.shared.lock().faults.rate_limit = None;
    }

    /// Forgets the faults not yet used up.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.next.clear();
    }

    /// Every `/v1/users...` request waits this long before taking effect
    /// and answering (`Duration::ZERO` to stop).
    pub fn set_delay(&self, delay: Duration) {
        self.shared.lock().faults.delay = delay;
    }

    /// Applies each request to users at once and answers it `delay` later
    /// (a caller that dies meanwhile never learns that it landed).
    pub fn set_answer_delay(&self, delay: Duration) {
        self.shared.lock().faults.answer_delay = delay;
    }

    /// While set, the user list ignores `starting_after`: every page is
    /// the first.
    pub fn set_ignore_cursor(&self, ignore: bool) {
        self.shared.lock().faults.ignore_cursor = ignore;
    }

    /// The next page asked for after a cursor is refused as Clerk refuses
    /// a cursor whose user was deleted meanwhile (422).
    pub fn refuse_next_cursor(&self) {
        self.shared.lock().faults.refuse_cursor = true;
    }

    /// From now on the user list shows at most `cap` users in all (`None`:
    /// all): an empty or truncated answer, as a wrong proxy or instance
    /// might give.
    pub fn cap_list(&self, cap: Option<usize>) {
        self.shared.lock().faults.list_cap = cap;
    }

    /// Clerk stops showing user `id` (left out of the list, 404 to a
    /// lookup or a write) until [`show_user`](Self::show_user): no webhook
    /// is sent.
    pub fn hide_user(&self, id: &str) {
        self.shared.lock().faults.hidden.insert(id.to_owned());
    }

    /// Clerk shows user `id` again, as it was.
    pub fn show_user(&self, id: &str) {
        self.shared.lock().faults.hidden.remove(id);
    }
}
