//! `/openapi.json` is a valid OpenAPI 3.1 document that lists every route the router
//! serves, with problem+json errors; `/docs` renders the viewer.

use std::collections::BTreeSet;

use emporium_gateway::auth::Access;
use emporium_tests::{Backend, TestApp};

#[tokio::test]
async fn the_spec_is_openapi_3_1_and_lists_every_route() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let raw = app
        .client
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let spec = oas3::from_json(&raw).expect("a valid OpenAPI 3.1 document");
    assert!(spec.openapi.starts_with("3.1"), "version {}", spec.openapi);

    let json: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let mut in_spec = BTreeSet::new();
    for (path, item) in json["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            in_spec.insert((method.to_uppercase(), path.clone()));
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path} has responses"
            );
        }
    }
    let routed: BTreeSet<(String, String)> = app
        .routes
        .iter()
        .map(|r| (r.method.to_string(), r.path.clone()))
        .collect();
    let missing: Vec<_> = routed.difference(&in_spec).collect();
    assert!(
        missing.is_empty(),
        "routes missing from the spec: {missing:?}"
    );
    let extra: Vec<_> = in_spec.difference(&routed).collect();
    assert!(
        extra.is_empty(),
        "spec paths that are not routed: {extra:?}"
    );

    for route in &app.routes {
        let op = &json["paths"][&route.path][route.method.as_str().to_lowercase()];
        if route.access != Access::Public {
            let responses = op["responses"].as_object().unwrap();
            for status in ["401", "403"] {
                let r = &responses[status];
                assert!(
                    r["content"]["application/problem+json"].is_object(),
                    "{} {} documents its {status} problem",
                    route.method,
                    route.path
                );
            }
            assert!(op["x-emporium-roles"].is_array());
        }
    }
    assert!(json["components"]["schemas"]["Problem"].is_object());
    assert!(json["components"]["securitySchemes"]["bearer"].is_object());

    let docs = app
        .client
        .get(format!("{}/docs/", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    let html = docs.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "the viewer page renders");
}

/// The analytics rankings answer JSON arrays, and the document says so (schemathesis found
/// `type: object` documented for both). Asked right after the start, before the read model
/// exists, they answer 503 with `Retry-After`, not 500.
#[tokio::test]
async fn documented_response_types_match_what_analytics_answers() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let spec = app.get("/openapi.json").await.body;
    for path in ["/v1/analytics/top-products", "/v1/analytics/warehouses"] {
        // Right after the start the read model may still be being built: 503, never 500.
        let mut answer = app.get(path).await;
        for _ in 0..200 {
            if answer.status != 503 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            answer = app.get(path).await;
        }
        assert_eq!(answer.status, 200, "{path}: {:?}", answer.body);
        let documented = &spec["paths"][path]["get"]["responses"]["200"]["content"]
            ["application/json"]["schema"]["type"];
        let actual = match answer.body {
            serde_json::Value::Array(_) => "array",
            serde_json::Value::Object(_) => "object",
            _ => "other",
        };
        assert_eq!(
            documented, actual,
            "{path}: documented {documented}, answered {actual}"
        );
    }
}
