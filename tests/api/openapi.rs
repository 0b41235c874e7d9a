//! The committed `openapi.yaml` is exactly what the code generates.

#[test]
fn committed_openapi_yaml_matches_the_code() {
    let generated = clerk_role_sync::openapi::yaml().expect("the document serializes");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        generated == committed,
        "openapi.yaml is out of date: run `cargo run -- openapi > openapi.yaml` and commit it"
    );
}

#[test]
fn document_is_openapi_3_1_with_problem_errors() {
    let document = clerk_role_sync::openapi::document();
    let json = serde_json::to_value(&document).expect("serializable");
    assert!(
        json["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3.1")
    );
    assert!(json["components"]["schemas"]["Problem"].is_object());
}
