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

/// Every operation of the document, with its path and method.
fn operations(document: &serde_json::Value) -> Vec<(String, String, serde_json::Value)> {
    let mut found = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            found.push((path.clone(), method.clone(), operation.clone()));
        }
    }
    found
}

#[test]
fn try_it_out_calls_the_service_the_document_is_served_from() {
    let document = serde_json::to_value(clerk_role_sync::openapi::document()).expect("json");
    let servers = document["servers"].as_array().expect("servers");
    assert_eq!(servers.len(), 1);
    assert_eq!(servers[0]["url"], "/");
}

#[test]
fn operations_are_named_in_lower_camel_case_and_declare_the_headers_clients_read() {
    let document = serde_json::to_value(clerk_role_sync::openapi::document()).expect("json");
    let headers = &document["components"]["headers"];
    for name in ["RequestId", "WwwAuthenticate", "RetryAfter"] {
        assert!(headers[name]["description"].is_string(), "{name}");
    }
    let operations = operations(&document);
    assert!(operations.len() >= 12, "{}", operations.len());
    for (path, method, operation) in &operations {
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            if parameter["in"] == "path" {
                assert_eq!(parameter["required"], true, "{method} {path}: {parameter}");
            }
        }
        let id = operation["operationId"].as_str().expect("an operationId");
        assert!(
            id.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && id.chars().all(|c| c.is_ascii_alphanumeric()),
            "{method} {path}: {id}"
        );
        for (status, response) in operation["responses"].as_object().expect("responses") {
            let declared = &response["headers"];
            assert!(
                declared["X-Request-Id"].is_object(),
                "{method} {path} {status}"
            );
            if status == "401" {
                assert!(declared["WWW-Authenticate"].is_object(), "{method} {path}");
            }
            if status == "503" {
                assert!(declared["Retry-After"].is_object(), "{method} {path}");
                let description = response["description"].as_str().unwrap_or_default();
                assert!(
                    description.contains("/problems/"),
                    "{method} {path}: {description}"
                );
            }
        }
    }
}

#[test]
fn every_request_body_and_the_main_responses_have_examples() {
    let document = serde_json::to_value(clerk_role_sync::openapi::document()).expect("json");
    let schemas = &document["components"]["schemas"];
    for (path, method, operation) in operations(&document) {
        let Some(body) = operation.get("requestBody") else {
            continue;
        };
        let content = &body["content"]["application/json"];
        let example = content.get("example").or_else(|| {
            let name = content["schema"]["$ref"].as_str()?.rsplit('/').next()?;
            schemas[name].get("examples")
        });
        assert!(
            example.is_some(),
            "{method} {path}: the body has no example"
        );
    }
    for name in [
        "UserResponse",
        "RoleStatsResponse",
        "RoleChangeResponse",
        "WebhookEventResponse",
        "Problem",
        "RoleRequest",
        "BulkRoleRequest",
    ] {
        assert!(
            schemas[name]["examples"].is_array(),
            "{name} has no example"
        );
    }
}

#[test]
fn the_readme_shows_the_typescript_client_that_ci_compiles() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let client = std::fs::read_to_string(root.join("tests/frontend/admin-client.ts"))
        .expect("tests/frontend/admin-client.ts");
    let shown = readme
        .split("```ts\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README shows a ```ts block");
    assert_eq!(
        shown, client,
        "README's client differs from the compiled one"
    );
}

#[test]
fn the_quick_start_fits_a_screen() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let quick_start = readme
        .split("\n## ")
        .find(|section| section.starts_with("Quick start"))
        .expect("a Quick start");
    let lines = quick_start.lines().count();
    assert!(lines <= 60, "the Quick start runs {lines} lines");
}
