//! The OpenAPI 3.0 document of the API, generated from the route table.

use serde_json::{Map, Value, json};

use super::routes::{Body, table};

/// The document served at `/openapi.json`.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for spec in table() {
        let parameters: Vec<Value> = spec
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .chain(spec.query.iter().map(|(name, kind, description)| {
                json!({ "name": name, "in": "query", "required": false, "description": description, "schema": { "type": kind } })
            }))
            .collect();
        let mut operation = json!({
            "summary": spec.summary,
            "operationId": operation_id(spec.method.as_str(), spec.path),
            "parameters": parameters,
            "responses": responses(spec.ok, spec.role.is_some(), spec.body, !spec.query.is_empty()),
        });
        if let Some(role) = spec.role {
            operation["security"] = json!([{ "bearer": [] }]);
            operation["x-required-role"] = json!(role.name());
        }
        let content = match spec.body {
            Body::Empty => None,
            Body::Json => Some(("application/json", json!({ "type": "object" }))),
            Body::Text => Some(("text/yaml", json!({ "type": "string" }))),
            Body::Binary => Some((
                "application/octet-stream",
                json!({ "type": "string", "format": "binary" }),
            )),
        };
        if let Some((mime, schema)) = content {
            operation["requestBody"] =
                json!({ "required": true, "content": { mime: { "schema": schema } } });
        }
        let item = paths
            .entry(spec.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        item[spec.method.as_str().to_ascii_lowercase()] = operation;
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "eyeflow node API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Programs, events, executions, approvals, audit and plugins of one eyeflow node. Errors are JSON: {\"error\": {\"code\", \"message\"}}.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": { "error": { "type": "object", "required": ["code", "message"],
                        "properties": { "code": { "type": "string" }, "message": { "type": "string" } } } },
                },
            },
        },
    })
}

fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_ascii_lowercase();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        let seg = seg.trim_start_matches('{').trim_end_matches('}');
        id.push('_');
        id.extend(
            seg.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
        );
    }
    id
}

fn responses(ok: u16, authenticated: bool, body: Body, query: bool) -> Value {
    let error = json!({ "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
    let mut out = Map::new();
    out.insert(ok.to_string(), json!({ "description": "success" }));
    let mut with = |status: &str, description: &str| {
        let mut e = error.clone();
        e["description"] = json!(description);
        out.insert(status.to_owned(), e);
    };
    if authenticated {
        with("401", "no valid bearer token");
        with("403", "the token's role is not enough");
    }
    if query && body == Body::Empty {
        with("400", "a query parameter is malformed or out of range");
    }
    if body != Body::Empty {
        with("400", "malformed body");
        with("413", "body too large");
        with("422", "refused (unsigned, tampered, incompatible, invalid)");
    }
    with("404", "not found");
    with("500", "internal error");
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_once() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        let mut operations = 0;
        for item in paths.values() {
            operations += item.as_object().unwrap().len();
        }
        assert_eq!(operations, table().len());
        assert_eq!(
            doc["paths"]["/api/programs"]["post"]["x-required-role"],
            "admin"
        );
        assert!(doc["paths"]["/healthz"]["get"].get("security").is_none());
        assert_eq!(
            doc["paths"]["/api/executions/{id}/approvals/{instruction}"]["post"]["parameters"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        let listing = &doc["paths"]["/api/executions"]["get"];
        assert_eq!(listing["parameters"].as_array().unwrap().len(), 5);
        assert_eq!(listing["parameters"][1]["name"], "status");
        assert!(listing["responses"].get("400").is_some());
        assert!(doc["paths"]["/api/executions/summary"]["get"].is_object());
    }
}
