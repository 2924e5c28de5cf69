//! Kubernetes' rules for the names and label selectors the configuration holds, so that a typo
//! stops the start naming its key instead of failing the first run (or, for a selector, being
//! refused by the API server only when a run lists pods).
//!
//! The rules are those of k8s.io/apimachinery: `validation.IsDNS1123Label` and
//! `IsDNS1123Subdomain` for names, and `labels.Parse` (its lexer, grammar and the checks of
//! `labels.NewRequirement`) for selectors. kube-rs builds selectors but does not parse them.

/// A DNS-1123 label (namespaces, most resource names): at most 63 lower-case letters, digits
/// and `-`, starting and ending with a letter or digit.
pub fn dns1123_label(value: &str) -> Result<(), String> {
    if value.len() <= 63 && is_dns1123_label(value) {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a DNS-1123 label: at most 63 lower-case letters, digits and '-', \
             starting and ending with a letter or digit"
        ))
    }
}

/// A DNS-1123 subdomain (Job names, for example): at most 253 characters, DNS-1123 labels
/// joined by `.`.
pub fn dns1123_subdomain(value: &str) -> Result<(), String> {
    if is_dns1123_subdomain(value) {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a DNS-1123 subdomain: at most 253 lower-case letters, digits, '-' \
             and '.', starting and ending with a letter or digit"
        ))
    }
}

fn is_dns1123_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        }
        _ => false,
    }
}

fn is_dns1123_subdomain(value: &str) -> bool {
    value.len() <= 253 && value.split('.').all(is_dns1123_label)
}

/// A label name or value: at most 63 letters, digits, `-`, `_` and `.`, starting and ending
/// with a letter or digit (a value may also be empty).
fn is_label_name(value: &str) -> bool {
    let bytes = value.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            value.len() <= 63
                && first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// A label key: a name, optionally prefixed by a DNS subdomain and `/`.
fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && !is_dns1123_subdomain(prefix)
    {
        return Err(format!(
            "the prefix of label key {key:?} is not a DNS-1123 subdomain"
        ));
    }
    if is_label_name(name) {
        Ok(())
    } else {
        Err(format!(
            "{key:?} is not a label key: at most 63 letters, digits, '-', '_' and '.', starting \
             and ending with a letter or digit, optionally after a DNS prefix and '/'"
        ))
    }
}

fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a label value: at most 63 letters, digits, '-', '_' and '.', \
             starting and ending with a letter or digit"
        ))
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Token<'a> {
    Identifier(&'a str),
    /// `!` before a key.
    Not,
    /// `=`, `==`, `!=`, `>`, `<`.
    Operator(&'a str),
    Open,
    Close,
    Comma,
    End,
}

impl Token<'_> {
    fn describe(&self) -> String {
        match self {
            Token::Identifier(text) | Token::Operator(text) => format!("'{text}'"),
            Token::Not => "'!'".to_owned(),
            Token::Open => "'('".to_owned(),
            Token::Close => "')'".to_owned(),
            Token::Comma => "','".to_owned(),
            Token::End => "the end".to_owned(),
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

/// The tokens of a selector, as apimachinery's lexer reads them.
fn tokens(selector: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut rest = selector.trim_start();
    while let Some(c) = rest.chars().next() {
        let (token, len) = match c {
            '(' => (Token::Open, 1),
            ')' => (Token::Close, 1),
            ',' => (Token::Comma, 1),
            '>' | '<' => (Token::Operator(&rest[..1]), 1),
            '=' if rest.starts_with("==") => (Token::Operator("=="), 2),
            '=' => (Token::Operator("="), 1),
            '!' if rest.starts_with("!=") => (Token::Operator("!="), 2),
            '!' => (Token::Not, 1),
            _ => {
                let len = rest
                    .find(|c: char| c.is_whitespace() || is_special(c))
                    .unwrap_or(rest.len());
                (Token::Identifier(&rest[..len]), len)
            }
        };
        tokens.push(token);
        rest = rest[len..].trim_start();
    }
    tokens.push(Token::End);
    tokens
}

/// Checks `selector` as the API server would parse it (`labels.Parse`): comma-separated
/// requirements `key`, `!key`, `key=value`, `key==value`, `key!=value`, `key in (a,b)`,
/// `key notin (a,b)`, `key>1`, `key<1`. The empty selector selects everything.
pub fn label_selector(selector: &str) -> Result<(), String> {
    let mut parser = Parser {
        tokens: tokens(selector),
        at: 0,
    };
    if parser.peek() == &Token::End {
        return Ok(());
    }
    loop {
        parser.requirement()?;
        match parser.next() {
            Token::End => return Ok(()),
            Token::Comma if matches!(parser.peek(), Token::Identifier(_) | Token::Not) => {}
            Token::Comma => return Err(parser.unexpected("a requirement after ','")),
            other => return Err(unexpected(&other, "',' or the end")),
        }
    }
}

struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    at: usize,
}

fn unexpected(found: &Token<'_>, expected: &str) -> String {
    format!(
        "unable to parse requirement: found {}, expected: {expected}",
        found.describe()
    )
}

impl<'a> Parser<'a> {
    fn peek(&self) -> &Token<'a> {
        &self.tokens[self.at.min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> Token<'a> {
        let token = self.peek().clone();
        self.at += 1;
        token
    }

    fn unexpected(&self, expected: &str) -> String {
        unexpected(self.peek(), expected)
    }

    /// One requirement: `!key`, `key`, or `key <operator> <value(s)>`.
    fn requirement(&mut self) -> Result<(), String> {
        let negated = self.peek() == &Token::Not;
        if negated {
            self.next();
        }
        let key = match self.next() {
            Token::Identifier(key) => key,
            other => return Err(unexpected(&other, "a label key")),
        };
        check_key(key)?;
        if negated || matches!(self.peek(), Token::Comma | Token::End) {
            return Ok(());
        }
        match self.next() {
            Token::Identifier("in" | "notin") => self.value_set(key),
            Token::Operator(op) => {
                // `key=` (followed by ',' or the end) compares with the empty value.
                let value = match self.peek() {
                    Token::Comma | Token::End => "",
                    Token::Identifier(value) => {
                        let value = *value;
                        self.next();
                        value
                    }
                    _ => return Err(self.unexpected("a value")),
                };
                if matches!(op, ">" | "<") && value.parse::<i64>().is_err() {
                    return Err(format!(
                        "{key}{op}{value}: for '>' and '<' the value must be an integer"
                    ));
                }
                check_value(value)
            }
            other => Err(unexpected(&other, "=, ==, !=, in, notin, > or <")),
        }
    }

    /// `(a, b, ...)` after `in` or `notin`: not empty.
    fn value_set(&mut self, key: &str) -> Result<(), String> {
        if self.next() != Token::Open {
            return Err(format!("{key}: expected '(' after 'in' or 'notin'"));
        }
        if self.peek() == &Token::Close {
            return Err(format!(
                "{key}: for 'in' and 'notin' the set of values must not be empty"
            ));
        }
        loop {
            // As in apimachinery, `(a,,b)` holds the empty value.
            match self.peek() {
                Token::Identifier(value) => {
                    check_value(value)?;
                    self.next();
                }
                Token::Comma | Token::Close => check_value("")?,
                _ => return Err(self.unexpected("a value")),
            }
            match self.next() {
                Token::Comma => {}
                Token::Close => return Ok(()),
                other => return Err(unexpected(&other, "',' or ')'")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_as_the_api_server_parses_them() {
        for good in [
            "",
            "app",
            "!app",
            "app=cray-reds",
            " app = cray-reds ",
            "app.kubernetes.io/name=cray-reds,tier!=db",
            "app==x,!legacy,version",
            "app in (a, b),tier notin (x)",
            "app=",
            "app=,b=c",
            "replicas>1,replicas<10",
            "app in (a,,b)",
        ] {
            label_selector(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
        }
        for bad in [
            ",",
            "app,",
            "app=a b",
            "app=a!",
            "=a",
            "-app=a",
            "app in ()",
            "app in (a",
            "app in a",
            "app > x",
            "!app=a",
            "app=-a",
            "a/b/c=d",
            "Bad_Prefix/app=a",
            &format!("app={}", "x".repeat(64)),
        ] {
            assert!(label_selector(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names() {
        dns1123_label("services").unwrap();
        dns1123_label("cray-bss-etcd").unwrap();
        for bad in ["", "Services", "-a", "a-", "a.b", &"a".repeat(64)] {
            assert!(dns1123_label(bad).is_err(), "{bad:?}");
        }
        dns1123_subdomain("cray-reds-init").unwrap();
        dns1123_subdomain("a.b-c").unwrap();
        for bad in ["", "a..b", "A", "a_b", &"a".repeat(254)] {
            assert!(dns1123_subdomain(bad).is_err(), "{bad:?}");
        }
    }
}
