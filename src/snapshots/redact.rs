//! Removal of secrets from captured data before it is stored.
//!
//! Neither BOS templates nor HMNFD subscriptions are supposed to hold secrets, but both carry
//! free-form parts (`cfs`, `rootfs_provider_passthrough`, subscription URLs with userinfo) that
//! someone may have filled with one. Keys are judged by name, recursively, and string values
//! that are private keys by their content; a false positive costs a field an admin restores by
//! hand, a false negative leaks a credential into the database and the API.

use serde_json::{Map, Value};

/// Words that make a key secret wherever they appear in it (`db_password`, `authToken`).
const SECRET_WORDS: [&str; 9] = [
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "credential",
    "privatekey",
    "apikey",
    "authorization",
];

/// Keys that are key material only as a whole word: `key`, `ssh_key`, `access_key`, but not
/// `kernel_parameters` or `keyboard`.
const KEY_SUFFIXES: [&str; 5] = ["key", "keys", "keydata", "keymaterial", "pem"];

/// Whether a JSON key looks like it names a secret.
pub fn is_secret_key(key: &str) -> bool {
    // Compare without separators and case, so `private_key`, `private-key` and `privateKey`
    // are one name.
    let squashed: String = key
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if SECRET_WORDS.iter().any(|w| squashed.contains(w)) {
        return true;
    }
    let last_word = key
        .rsplit(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or(key)
        .to_ascii_lowercase();
    // camelCase: `sshKey` -> the last capitalised word.
    let camel_tail = key
        .char_indices()
        .rev()
        .find(|(_, c)| c.is_ascii_uppercase())
        .map(|(i, _)| key[i..].to_ascii_lowercase());
    KEY_SUFFIXES.contains(&last_word.as_str())
        || camel_tail.is_some_and(|tail| KEY_SUFFIXES.contains(&tail.as_str()))
}

/// A string value that is key material whatever its key is called.
fn is_key_material(value: &str) -> bool {
    value.contains("-----BEGIN") && value.contains("PRIVATE KEY")
}

/// `value` without secret-looking keys (and without private-key strings); the second value lists
/// the JSON paths removed (`$[0].boot_sets.compute.password`).
pub fn redact(value: Value) -> (Value, Vec<String>) {
    let mut removed = Vec::new();
    let value = walk(value, "$", &mut removed);
    (value, removed)
}

fn walk(value: Value, path: &str, removed: &mut Vec<String>) -> Value {
    match value {
        Value::Object(fields) => {
            let mut kept = Map::new();
            for (key, field) in fields {
                let field_path = format!("{path}.{key}");
                let secret_string = field.as_str().is_some_and(is_key_material);
                if is_secret_key(&key) || secret_string {
                    removed.push(field_path);
                } else {
                    kept.insert(key, walk(field, &field_path, removed));
                }
            }
            Value::Object(kept)
        }
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    let item_path = format!("{path}[{i}]");
                    if item.as_str().is_some_and(is_key_material) {
                        removed.push(item_path);
                        None
                    } else {
                        Some(walk(item, &item_path, removed))
                    }
                })
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secret_names_are_recognised_in_every_spelling() {
        for key in [
            "password",
            "Password",
            "db_password",
            "authToken",
            "access_token",
            "client-secret",
            "credentials",
            "privateKey",
            "private_key",
            "ssh_key",
            "sshKey",
            "key",
            "api-key",
            "Authorization",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "kernel_parameters",
            "name",
            "boot_sets",
            "node_roles_groups",
            "keyboard",
            "monkey_business",
            "etag",
            "Url",
            "SubscriberComponent",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn removes_secrets_recursively_and_names_the_paths() {
        let (clean, removed) = redact(json!([
            {
                "name": "t1",
                "cfs": {"configuration": "c", "password": "hunter2"},
                "boot_sets": {"compute": {
                    "kernel_parameters": "quiet",
                    "rootfs_provider_passthrough": "dvs",
                    "credentials": {"user": "u", "pass": "p"},
                    "extra": [{"token": "abc"}, "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----"],
                }},
            }
        ]));
        assert_eq!(
            clean,
            json!([{
                "name": "t1",
                "cfs": {"configuration": "c"},
                "boot_sets": {"compute": {
                    "kernel_parameters": "quiet",
                    "rootfs_provider_passthrough": "dvs",
                    "extra": [{}],
                }},
            }])
        );
        assert_eq!(
            removed,
            vec![
                "$[0].boot_sets.compute.credentials",
                "$[0].boot_sets.compute.extra[0].token",
                "$[0].boot_sets.compute.extra[1]",
                "$[0].cfs.password",
            ]
        );
        let text = clean.to_string();
        assert!(!text.contains("hunter2") && !text.contains("PRIVATE KEY"));
    }
}
