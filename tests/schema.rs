//! The committed JSON Schemas are current, valid draft-07, and what `ztraded schema` prints.

use std::path::Path;
use ztraded::config::ResourceKind;
use ztraded::config::schema::generate_text;

fn committed(kind: ResourceKind) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schema")
        .join(format!("{}.json", kind.as_str()));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn committed_schemas_are_current() {
    for kind in ResourceKind::ALL {
        assert_eq!(
            committed(kind),
            generate_text(kind),
            "schema/{}.json is stale: run `ztraded schema {} > schema/{}.json`",
            kind.as_str(),
            kind.as_str(),
            kind.as_str()
        );
    }
}

#[test]
fn schemas_are_valid_draft_07() {
    for kind in ResourceKind::ALL {
        let schema: serde_json::Value = serde_json::from_str(&committed(kind)).unwrap();
        assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
        jsonschema::meta::validate(&schema)
            .unwrap_or_else(|e| panic!("{} is not a valid JSON Schema: {e}", kind.as_str()));
    }
}

#[test]
fn the_schema_command_prints_the_committed_file() {
    for kind in ResourceKind::ALL {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ztraded"))
            .args(["schema", kind.as_str()])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8(out.stdout).unwrap(), committed(kind));
    }
}

#[test]
fn schemas_describe_every_field() {
    // Every property of every object in the schemas carries a description (from the
    // doc comments), so that editors can show it.
    fn walk(v: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
            for (name, prop) in props {
                let described = prop.get("description").is_some()
                    || prop.get("$ref").is_some()
                    || (prop.get("const").is_some() || prop.get("enum").is_some())
                        && path.contains("allOf");
                if !described {
                    missing.push(format!("{path}/properties/{name}"));
                }
            }
        }
        match v {
            serde_json::Value::Object(m) => {
                for (k, child) in m {
                    walk(child, &format!("{path}/{k}"), missing);
                }
            }
            serde_json::Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    walk(child, &format!("{path}/{i}"), missing);
                }
            }
            _ => {}
        }
    }
    for kind in ResourceKind::ALL {
        let schema: serde_json::Value = serde_json::from_str(&committed(kind)).unwrap();
        let mut missing = Vec::new();
        walk(&schema, "", &mut missing);
        assert!(
            missing.is_empty(),
            "{}: undocumented: {missing:#?}",
            kind.as_str()
        );
    }
}
