//! `auth.mode = "token"`: static bearer tokens from a file of `name:role:token` lines (`role`:
//! `read`, `write` or `recover`).

use std::{fmt, path::Path};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{
    error::{AuthError, AuthSetupError},
    principal::Principal,
    role::Role,
};

/// Static tokens. Only SHA-256 digests are kept: comparing digests of equal length in constant
/// time does not reveal a token's length or prefix through timing, and a memory dump does not
/// reveal the tokens.
pub struct TokenSet {
    entries: Vec<TokenEntry>,
}

struct TokenEntry {
    name: String,
    role: Role,
    digest: [u8; 32],
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names and roles only: never the tokens, not even their digests.
        f.debug_list()
            .entries(
                self.entries
                    .iter()
                    .map(|e| format!("{}:{}", e.name, e.role.as_str())),
            )
            .finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenSet {
    pub fn load(path: &Path) -> Result<TokenSet, AuthSetupError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthSetupError::Read {
            path: path.display().to_string(),
            source,
        })?;
        TokenSet::parse(&text).map_err(|(line, problem)| AuthSetupError::Line {
            path: path.display().to_string(),
            line,
            problem,
        })
    }

    /// Parses `name:role:token` lines; errors carry the line number and never the token.
    pub fn parse(text: &str) -> Result<TokenSet, (usize, String)> {
        let mut entries: Vec<TokenEntry> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.splitn(3, ':');
            let (Some(name), Some(role), Some(token)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err((number, "expected name:role:token".to_owned()));
            };
            let name = name.trim();
            if name.is_empty() {
                return Err((number, "the name is empty".to_owned()));
            }
            let Some(role) = Role::ALL.into_iter().find(|r| r.as_str() == role.trim()) else {
                return Err((
                    number,
                    format!("role {:?} is not read, write or recover", role.trim()),
                ));
            };
            let token = token.trim();
            if token.is_empty() {
                return Err((number, format!("the token of {name} is empty")));
            }
            if entries.iter().any(|e| e.name == name) {
                return Err((number, format!("the name {name} is used twice")));
            }
            let digest = digest(token);
            if entries.iter().any(|e| bool::from(e.digest.ct_eq(&digest))) {
                return Err((
                    number,
                    format!("the token of {name} is also another name's token"),
                ));
            }
            entries.push(TokenEntry {
                name: name.to_owned(),
                role,
                digest,
            });
        }
        Ok(TokenSet { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(super) fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let presented = digest(token);
        // Look at every entry, without stopping at a match, so the time taken does not say
        // which entry matched.
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(&presented)) {
                found = Some(entry);
            }
        }
        found
            .map(|entry| Principal {
                name: entry.name.clone(),
                role: Some(entry.role),
            })
            .ok_or_else(|| AuthError::Invalid("unknown token".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_lines() {
        let set = TokenSet::parse(
            "# comment\n\nadmin:write:s3cret:with:colons\n  viewer : read : abc \nops:recover:r3c\n",
        )
        .unwrap();
        assert_eq!(
            set.verify("s3cret:with:colons").unwrap(),
            Principal {
                name: "admin".into(),
                role: Some(Role::Write)
            }
        );
        assert_eq!(set.verify("abc").unwrap().role, Some(Role::Read));
        assert_eq!(set.verify("r3c").unwrap().role, Some(Role::Recover));
        assert!(matches!(set.verify("abd"), Err(AuthError::Invalid(_))));
        let debug = format!("{set:?}");
        assert!(
            !debug.contains("s3cret") && debug.contains("admin:write"),
            "{debug}"
        );

        let (line, problem) = TokenSet::parse("a:read:x\nb:admin:super-secret\n")
            .err()
            .unwrap();
        assert_eq!(line, 2);
        assert!(!problem.contains("super-secret"), "{problem}");
        assert_eq!(problem, "role \"admin\" is not read, write or recover");
        assert_eq!(TokenSet::parse("a:read:x\na:write:y").err().unwrap().0, 2);
        assert_eq!(TokenSet::parse("a:read:x\nb:write:x").err().unwrap().0, 2);
        assert_eq!(TokenSet::parse("justatoken").err().unwrap().0, 1);
    }
}
