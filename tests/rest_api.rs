//! The Storm-shaped REST API on a real cluster, checked against `docs/openapi.json`: every path
//! the document names is called and its answer validated against the document's schema.

use std::time::Duration;

use serde_json::{Value, json};
use squall_tests::sandbox::ClusterSandbox;

const TOPOLOGY: &str = env!("CARGO_BIN_EXE_test_topology");

fn openapi() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

/// The schema of `method path`'s answer with `status`, following a response `$ref`.
fn schema_of(doc: &Value, path: &str, method: &str, status: &str) -> Value {
    let mut response = doc["paths"][path][method]["responses"][status].clone();
    if let Some(reference) = response["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap_or_default();
        response = doc["components"]["responses"][name].clone();
    }
    let schema = response["content"]["application/json"]["schema"].clone();
    assert!(!schema.is_null(), "docs/openapi.json has no {status} schema for {method} {path}");
    schema
}

/// Validates `answer` against `schema` (which may refer to the document's components).
fn check(doc: &Value, schema: &Value, answer: &Value, what: &str) {
    let mut root = schema.clone();
    if let Some(object) = root.as_object_mut() {
        object.insert("components".to_owned(), doc["components"].clone());
    }
    let validator = jsonschema::draft202012::new(&root).unwrap_or_else(|e| panic!("bad schema for {what}: {e}"));
    let errors: Vec<String> = validator.iter_errors(answer).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "{what} breaks docs/openapi.json: {errors:?}\n{answer:#}");
}

fn call(method: &str, url: &str, body: Option<&Value>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let response = match (method, body) {
        ("get", _) => agent.get(url).call(),
        (_, Some(body)) => agent.post(url).send_json(body),
        _ => agent.post(url).send_empty(),
    };
    let mut response = response.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {url} answered {status} with no JSON ({e}): {text}")),
    )
}

#[test]
fn the_storm_shaped_rest_api_answers_as_its_openapi_document_says() {
    let doc = openapi();
    let env = [("SQUALL_TEST_FAIL_EVERY", "500"), ("SQUALL_TEST_SENTENCES", "5000000")];
    let sandbox = ClusterSandbox::start_with(1, 1, 2, &env);
    sandbox.cli_ok(&["submit", TOPOLOGY, "--name", "api", "-c", "topology.workers=2"]);
    let base = format!("http://{}", sandbox.nimbus_address(0));
    let url = |path: &str| {
        format!("{base}{}", path.replace("{id}", "api").replace("{component}", "split").replace("{wait}", "0"))
    };
    sandbox.wait_for("split errors reported", Duration::from_secs(90), |_| {
        let (_, page) = call("get", &url("/api/v1/topology/{id}/component/{component}"), None);
        page["componentErrors"].as_array().is_some_and(|e| !e.is_empty())
    });

    // Every GET in the document, validated.
    let mut answers = std::collections::BTreeMap::new();
    let paths = doc["paths"].as_object().cloned().unwrap_or_default();
    for (path, _) in paths.iter().filter(|(_, item)| item.get("get").is_some()) {
        let (status, answer) = call("get", &url(path), None);
        assert_eq!(status, 200, "GET {path}: {answer}");
        check(&doc, &schema_of(&doc, path, "get", "200"), &answer, &format!("GET {path}"));
        answers.insert(path.clone(), answer);
    }
    let cluster = &answers["/api/v1/cluster/summary"];
    assert_eq!((cluster["supervisors"].as_u64(), cluster["topologies"].as_u64()), (Some(1), Some(1)), "{cluster}");
    assert_eq!((cluster["slotsTotal"].as_u64(), cluster["slotsUsed"].as_u64()), (Some(2), Some(2)), "{cluster}");
    let nimbuses = &answers["/api/v1/nimbus/summary"]["nimbuses"];
    assert_eq!(nimbuses[0]["status"], "Leader", "{nimbuses}");
    let topologies = &answers["/api/v1/topology/summary"]["topologies"];
    assert_eq!((topologies[0]["name"].as_str(), topologies[0]["status"].as_str()), (Some("api"), Some("ACTIVE")));
    let page = &answers["/api/v1/topology/{id}"];
    let sentences = page["spouts"].as_array().and_then(|s| s.iter().find(|s| s["id"] == "sentences")).cloned();
    assert!(sentences.is_some_and(|s| s["emitted"].as_u64() > Some(0)), "{page}");
    assert_eq!(page["workers"].as_array().map(Vec::len), Some(2), "{page}");
    let split = &answers["/api/v1/topology/{id}/component/{component}"];
    assert_eq!(split["executorStats"].as_array().map(Vec::len), Some(2), "{split}");
    assert!(split["componentErrors"][0]["error"].as_str().is_some_and(|e| e.starts_with("split: a test failure")));
    // By id too.
    let id = page["id"].as_str().unwrap_or_default().to_owned();
    let (status, by_id) = call("get", &format!("{base}/api/v1/topology/{id}"), None);
    assert_eq!((status, by_id["name"].as_str()), (200, Some("api")));

    // Unknown things: 404 with an error naming them.
    let (status, error) = call("get", &format!("{base}/api/v1/topology/nope"), None);
    assert_eq!(status, 404);
    check(&doc, &schema_of(&doc, "/api/v1/topology/{id}", "get", "404"), &error, "404");
    let (status, error) = call("get", &format!("{base}/api/v1/topology/api/component/nope"), None);
    assert!(status == 404 && error["error"].as_str().is_some_and(|e| e.contains("no component `nope`")), "{error}");

    // The actions, each answer validated, each taking effect.
    let status_of = || call("get", &url("/api/v1/topology/{id}"), None).1["status"].as_str().map(str::to_owned);
    let act = |path: &str, body: Option<&Value>| {
        let (status, answer) = call("post", &url(path), body);
        assert_eq!(status, 200, "POST {path}: {answer}");
        check(&doc, &schema_of(&doc, path, "post", "200"), &answer, &format!("POST {path}"));
    };
    act("/api/v1/topology/{id}/deactivate", None);
    assert_eq!(status_of().as_deref(), Some("INACTIVE"));
    act("/api/v1/topology/{id}/activate", None);
    assert_eq!(status_of().as_deref(), Some("ACTIVE"));
    act("/api/v1/topology/{id}/rebalance/{wait}", Some(&json!({"rebalanceOptions": {"numWorkers": 1}})));
    sandbox.wait_for("one worker after the rebalance", Duration::from_secs(60), |_| {
        call("get", &url("/api/v1/topology/{id}"), None).1["workersTotal"] == 1
    });
    act("/api/v1/topology/{id}/kill/{wait}", None);
    sandbox.wait_for("the topology gone", Duration::from_secs(30), |_| {
        call("get", &url("/api/v1/topology/summary"), None).1["topologies"].as_array().is_some_and(Vec::is_empty)
    });
}
