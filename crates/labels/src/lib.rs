//! Kubernetes' rules for names and label selectors, in one place for both sides: the service
//! checks the names and selectors its configuration holds (so that a typo stops the start naming
//! its key instead of failing the first run), and the simulated API server parses and matches
//! the `labelSelector` of every list and watch with the same grammar.
//!
//! The rules are those of k8s.io/apimachinery: `validation.IsDNS1123Label` and
//! `IsDNS1123Subdomain` for names, and `labels.Parse` (its lexer, grammar and the checks of
//! `labels.NewRequirement`) and `Requirement.Matches` for selectors. kube-rs builds selectors but
//! does not parse them.

use std::collections::BTreeMap;

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

/// What a requirement asks of a label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    Gt(i64),
    Lt(i64),
}

/// One requirement of a selector: `key` and what its label must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
}

impl Requirement {
    /// As apimachinery's `Requirement.Matches`: `!=` and `notin` also match labels without the
    /// key; `>` and `<` need an integer label.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.key);
        let number = || v.and_then(|v| v.parse::<i64>().ok());
        match &self.op {
            Op::Eq(x) => v == Some(x),
            Op::NotEq(x) => v != Some(x),
            Op::In(xs) => v.is_some_and(|v| xs.contains(v)),
            Op::NotIn(xs) => v.is_none_or(|v| !xs.contains(v)),
            Op::Exists => v.is_some(),
            Op::DoesNotExist => v.is_none(),
            Op::Gt(n) => number().is_some_and(|v| v > *n),
            Op::Lt(n) => number().is_some_and(|v| v < *n),
        }
    }
}

/// A parsed label selector: requirements that must all hold; the empty selector selects
/// everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector(pub Vec<Requirement>);

impl Selector {
    /// Parses `selector` as the API server does (`labels.Parse`): comma-separated requirements
    /// `key`, `!key`, `key=value`, `key==value`, `key!=value`, `key in (a,b)`,
    /// `key notin (a,b)`, `key>1`, `key<1`. The error reads like the API server's.
    pub fn parse(selector: &str) -> Result<Selector, String> {
        let mut parser = Parser {
            tokens: tokens(selector),
            at: 0,
        };
        let mut requirements = Vec::new();
        if parser.peek() == &Token::End {
            return Ok(Selector(requirements));
        }
        loop {
            requirements.push(parser.requirement()?);
            match parser.next() {
                Token::End => return Ok(Selector(requirements)),
                Token::Comma if matches!(parser.peek(), Token::Identifier(_) | Token::Not) => {}
                Token::Comma => return Err(parser.unexpected("a requirement after ','")),
                other => return Err(unexpected(&other, "',' or the end")),
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| r.matches(labels))
    }
}

/// Checks `selector` as the API server would parse it ([`Selector::parse`]).
pub fn label_selector(selector: &str) -> Result<(), String> {
    Selector::parse(selector).map(drop)
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
    fn requirement(&mut self) -> Result<Requirement, String> {
        let negated = self.peek() == &Token::Not;
        if negated {
            self.next();
        }
        let key = match self.next() {
            Token::Identifier(key) => key,
            other => return Err(unexpected(&other, "a label key")),
        };
        check_key(key)?;
        let requirement = |op| Requirement {
            key: key.to_owned(),
            op,
        };
        if negated {
            return Ok(requirement(Op::DoesNotExist));
        }
        if matches!(self.peek(), Token::Comma | Token::End) {
            return Ok(requirement(Op::Exists));
        }
        match self.next() {
            Token::Identifier(set @ ("in" | "notin")) => {
                let values = self.value_set(key)?;
                Ok(requirement(if set == "in" {
                    Op::In(values)
                } else {
                    Op::NotIn(values)
                }))
            }
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
                let integer = || {
                    value.parse::<i64>().map_err(|_| {
                        format!("{key}{op}{value}: for '>' and '<' the value must be an integer")
                    })
                };
                let op = match op {
                    ">" => Op::Gt(integer()?),
                    "<" => Op::Lt(integer()?),
                    "!=" => Op::NotEq(value.to_owned()),
                    _ => Op::Eq(value.to_owned()),
                };
                check_value(value)?;
                Ok(requirement(op))
            }
            other => Err(unexpected(&other, "=, ==, !=, in, notin, > or <")),
        }
    }

    /// `(a, b, ...)` after `in` or `notin`: not empty.
    fn value_set(&mut self, key: &str) -> Result<Vec<String>, String> {
        if self.next() != Token::Open {
            return Err(format!("{key}: expected '(' after 'in' or 'notin'"));
        }
        if self.peek() == &Token::Close {
            return Err(format!(
                "{key}: for 'in' and 'notin' the set of values must not be empty"
            ));
        }
        let mut values = Vec::new();
        loop {
            // As in apimachinery, `(a,,b)` holds the empty value.
            match self.peek() {
                Token::Identifier(value) => {
                    let value = *value;
                    check_value(value)?;
                    values.push(value.to_owned());
                    self.next();
                }
                Token::Comma | Token::Close => {
                    check_value("")?;
                    values.push(String::new());
                }
                _ => return Err(self.unexpected("a value")),
            }
            match self.next() {
                Token::Comma => {}
                Token::Close => return Ok(values),
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
    fn selectors_match_as_apimachinery_matches() {
        let labels: BTreeMap<String, String> = [("app", "cray-bss"), ("replicas", "3")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        for (selector, expected) in [
            ("", true),
            ("app", true),
            ("!app", false),
            ("!tier", true),
            ("app=cray-bss", true),
            ("app==cray-bos", false),
            ("tier!=db", true),
            ("app in (cray-bos, cray-bss)", true),
            ("tier notin (db)", true),
            ("app notin (cray-bss)", false),
            ("replicas>2,replicas<4", true),
            ("app>2", false),
            ("app=cray-bss,tier", false),
        ] {
            let parsed = Selector::parse(selector).unwrap();
            assert_eq!(parsed.matches(&labels), expected, "{selector:?}");
        }
        assert_eq!(
            Selector::parse("a in (x,,y)").unwrap().0[0].op,
            Op::In(vec!["x".to_owned(), String::new(), "y".to_owned()])
        );
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
