//! Host names built from a node's HSM data (`[hmnfd] compute_hostname`, `ncn_hostname`).

use std::fmt::Write as _;

use crate::csm::HsmComponent;

#[derive(Clone, Debug, PartialEq)]
enum Part {
    Literal(String),
    Nid { width: usize },
    Xname,
}

/// A host name built from a node's HSM data: `nid{nid:06}-nmn`, `{xname}`, `{nid}`. Only
/// these placeholders exist; anything else in braces is a configuration error.
#[derive(Clone, Debug, PartialEq)]
pub struct HostnameTemplate {
    parts: Vec<Part>,
}

impl HostnameTemplate {
    pub fn parse(template: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in {template:?}"))?;
            let placeholder = &rest[open + 1..open + close];
            parts.push(match placeholder.split_once(':') {
                None if placeholder == "nid" => Part::Nid { width: 0 },
                None if placeholder == "xname" => Part::Xname,
                Some(("nid", width)) if width.starts_with('0') => Part::Nid {
                    width: width.parse().map_err(|_| {
                        format!("bad width {width:?} in {template:?} (e.g. {{nid:06}})")
                    })?,
                },
                _ => {
                    return Err(format!(
                        "unknown placeholder {{{placeholder}}} in {template:?}; known: {{nid}}, \
                         {{nid:06}} (zero-padded), {{xname}}"
                    ));
                }
            });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        if parts.is_empty() {
            return Err("must not be empty".to_owned());
        }
        if template.contains('}')
            && parts
                .iter()
                .any(|p| matches!(p, Part::Literal(l) if l.contains('}')))
        {
            return Err(format!("unmatched '}}' in {template:?}"));
        }
        Ok(HostnameTemplate { parts })
    }

    /// The node's host name; `None` when the template needs a NID and HSM has none for it.
    pub fn render(&self, node: &HsmComponent) -> Option<String> {
        let mut name = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => name.push_str(text),
                Part::Xname => name.push_str(&node.id),
                Part::Nid { width } => {
                    let nid = node.nid?;
                    // Writing to a String cannot fail.
                    let _ = write!(name, "{nid:0width$}");
                }
            }
        }
        Some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(xname: &str, nid: Option<i64>) -> HsmComponent {
        HsmComponent {
            id: xname.to_owned(),
            kind: "Node".to_owned(),
            nid,
            ..HsmComponent::default()
        }
    }

    #[test]
    fn runbook_template_pads_the_nid() {
        let t = HostnameTemplate::parse("nid{nid:06}-nmn").unwrap();
        assert_eq!(
            t.render(&node("x1000c0s0b0n0", Some(17))).as_deref(),
            Some("nid000017-nmn")
        );
        assert_eq!(
            t.render(&node("x1000c0s0b0n0", Some(1_234_567))).as_deref(),
            Some("nid1234567-nmn")
        );
        assert_eq!(t.render(&node("x1000c0s0b0n0", None)), None);
    }

    #[test]
    fn xname_and_plain_nid_placeholders() {
        let t = HostnameTemplate::parse("{xname}.nmn").unwrap();
        assert_eq!(
            t.render(&node("x3000c0s4b0n0", None)).as_deref(),
            Some("x3000c0s4b0n0.nmn")
        );
        let t = HostnameTemplate::parse("nid{nid}").unwrap();
        assert_eq!(t.render(&node("x", Some(7))).as_deref(), Some("nid7"));
    }

    #[test]
    fn bad_templates_are_named() {
        for bad in ["nid{nod}", "nid{nid:6}", "nid{nid", "", "a}b{xname}"] {
            assert!(HostnameTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
