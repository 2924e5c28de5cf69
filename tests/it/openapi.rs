//! The committed OpenAPI document is the one the service serves. Regenerate it with
//! `cargo run -- openapi > openapi/openapi.json`.

#[test]
fn committed_openapi_document_is_up_to_date() {
    let served = serde_json::to_value(etcd_repopulator::api::openapi()).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
    let committed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("openapi/openapi.json exists"))
            .expect("openapi/openapi.json is JSON");
    assert!(
        served == committed,
        "openapi/openapi.json is out of date: run `cargo run -- openapi > openapi/openapi.json`"
    );
}

#[test]
fn every_operation_has_an_id_a_tag_and_a_summary() {
    let doc = serde_json::to_value(etcd_repopulator::api::openapi()).unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(op["operationId"].is_string(), "{method} {path}");
            assert!(
                op["tags"].as_array().is_some_and(|t| !t.is_empty()),
                "{method} {path}"
            );
            assert!(op["summary"].is_string(), "{method} {path}");
        }
    }
}

/// A header is absent or a string: `null` is not a value a client can send (it would arrive as
/// the text "null"), so no header parameter is documented as nullable.
#[test]
fn header_parameters_are_strings_not_null() {
    let doc = serde_json::to_value(etcd_repopulator::api::openapi()).unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for param in op["parameters"].as_array().into_iter().flatten() {
                if param["in"] != "header" {
                    continue;
                }
                let schema = param["schema"].to_string();
                assert!(
                    !schema.contains("null"),
                    "{method} {path} header {}: {schema}",
                    param["name"]
                );
            }
        }
    }
}

/// An id another operation takes as a path parameter is never `null` in a response: a client
/// (or Schemathesis following the inferred link) would request `/repopulations/None`.
#[test]
fn run_ids_in_responses_are_never_null() {
    let doc = serde_json::to_value(etcd_repopulator::api::openapi()).unwrap();
    let run_id = &doc["components"]["schemas"]["AlertResult"]["properties"]["run_id"];
    assert!(!run_id.to_string().contains("null"), "{run_id}");
    let required = &doc["components"]["schemas"]["AlertResult"]["required"];
    assert!(
        !required.as_array().unwrap().contains(&"run_id".into()),
        "{required}"
    );
}
