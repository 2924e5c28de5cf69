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
