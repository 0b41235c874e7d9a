//! One Clerk instance per database: the instance of the key is recorded at
//! first contact; a key of another instance stops `serve` at start (and the
//! command-line walks) before anything is sent or read; while Clerk cannot
//! say which instance the key is of, pushes and the drift audit wait.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_clerk-role-sync");

/// `sk_live_…` with `pk_test_…`: the configuration is refused before
/// anything starts, naming both variables and neither key.
#[test]
fn a_live_secret_key_with_a_test_publishable_key_is_refused() {
    let dir = tempfile::tempdir().expect("a directory");
    let output = Command::new(BIN)
        .arg("serve")
        .current_dir(dir.path())
        .env_clear()
        .env("CLERK_SECRET_KEY", "sk_live_do_not_print_me")
        // base64("clerk.example.com$")
        .env("CLERK_PUBLISHABLE_KEY", "pk_test_Y2xlcmsuZXhhbXBsZS5jb20k")
        .output()
        .expect("the binary runs");

    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CLERK_SECRET_KEY"), "{stderr}");
    assert!(stderr.contains("CLERK_PUBLISHABLE_KEY"), "{stderr}");
    assert!(!stderr.contains("do_not_print_me"), "{stderr}");
    assert!(
        !dir.path().join("clerk-role-sync.db").exists(),
        "refused before the database was opened"
    );
}
