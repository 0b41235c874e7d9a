//! Every error, whoever produces it, is a problem+json document.

use crate::both_backends;
use crate::helpers::{problem, spawn_app};

both_backends! {
    async fn unknown_routes_are_404_problems(backend) {
        let app = spawn_app(backend).await;

        for path in ["/nope", "/api/admin", "/healthz/extra"] {
            let body = problem(app.get(path).await, 404).await;
            assert_eq!(body["title"], "Not Found");
            assert_eq!(body["type"], "about:blank");
        }
    }
}
