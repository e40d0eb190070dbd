//! `ssl.principal.mapping.rules` (KIP-371): Kafka's `SslPrincipalMapper`, which turns a client
//! certificate's subject DN into the principal's name.
//!
//! Rules are tried in order: `DEFAULT` takes the DN as it is; `RULE:pattern/replacement/` with
//! an optional `L` or `U` applies when the pattern matches the whole DN, and the name is the DN
//! with every match replaced (`$1` names a group), lower- or upper-cased. A DN no rule applies
//! to fails the connection, as Kafka's `NoMatchingRule` does. Patterns are Rust regular
//! expressions, which read Java's usual ones (no look-around or back-references); `\/` is a
//! literal slash in a pattern or replacement.

use regex::Regex;

/// One rule.
#[derive(Debug, Clone)]
enum Rule {
    Default,
    Replace {
        /// The pattern anchored at both ends, for Java's `matches()`.
        whole: Regex,
        /// The pattern as written, for Java's `replaceAll`.
        pattern: Regex,
        /// The replacement in the `regex` crate's syntax (`${1}`).
        replacement: String,
        case: Case,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Keep,
    Lower,
    Upper,
}

/// The rules of one listener.
#[derive(Debug, Clone)]
pub struct PrincipalMapper {
    rules: Vec<Rule>,
}

impl Default for PrincipalMapper {
    fn default() -> Self {
        PrincipalMapper {
            rules: vec![Rule::Default],
        }
    }
}

impl PrincipalMapper {
    /// Parses `ssl.principal.mapping.rules`; the error says which rule is wrong.
    pub fn parse(text: &str) -> Result<PrincipalMapper, String> {
        let mut rules = Vec::new();
        let mut rest = text.trim();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("DEFAULT") {
                rules.push(Rule::Default);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("RULE:") {
                let (pattern, after) = until_slash(after)
                    .ok_or_else(|| format!("rule {rest:?}: expected RULE:pattern/replacement/"))?;
                let (replacement, after) = until_slash(after)
                    .ok_or_else(|| format!("rule {rest:?}: expected RULE:pattern/replacement/"))?;
                let (case, after) = match after.chars().next() {
                    Some('L') => (Case::Lower, &after[1..]),
                    Some('U') => (Case::Upper, &after[1..]),
                    _ => (Case::Keep, after),
                };
                let compile =
                    |p: &str| Regex::new(p).map_err(|e| format!("rule pattern {pattern:?}: {e}"));
                rules.push(Rule::Replace {
                    whole: compile(&format!("^(?:{pattern})$"))?,
                    pattern: compile(&pattern)?,
                    replacement: java_replacement(&replacement),
                    case,
                });
                rest = after;
            } else {
                return Err(format!(
                    "rule {rest:?}: expected DEFAULT or RULE:pattern/replacement/[LU]"
                ));
            }
            rest = rest.trim_start();
            match rest.strip_prefix(',') {
                Some(after) => rest = after.trim_start(),
                None if rest.is_empty() => {}
                None => return Err(format!("rule {rest:?}: rules are separated by commas")),
            }
        }
        if rules.is_empty() {
            return Err("no rules (the default is DEFAULT)".into());
        }
        Ok(PrincipalMapper { rules })
    }

    /// The principal name for subject `dn`, or why no rule applies.
    pub fn name(&self, dn: &str) -> Result<String, String> {
        for rule in &self.rules {
            match rule {
                Rule::Default => return Ok(dn.to_string()),
                Rule::Replace {
                    whole,
                    pattern,
                    replacement,
                    case,
                } if whole.is_match(dn) => {
                    let name = pattern.replace_all(dn, replacement.as_str());
                    return Ok(match case {
                        Case::Keep => name.into_owned(),
                        Case::Lower => name.to_lowercase(),
                        Case::Upper => name.to_uppercase(),
                    });
                }
                Rule::Replace { .. } => {}
            }
        }
        Err(format!(
            "no ssl.principal.mapping.rules rule applies to {dn}"
        ))
    }
}

/// The text up to the first unescaped `/` (with `\/` read as `/`), and what follows it.
fn until_slash(text: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '/' => return Some((out, &text[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '/')) => out.push('/'),
                Some((_, other)) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    None
}

/// Java's `replaceAll` replacement (`$1`, `\$` for a dollar) in the `regex` crate's syntax.
fn java_replacement(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('$') => out.push_str("$$"),
                Some(other) => out.push(other),
                None => {}
            },
            '$' if chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push_str("${");
                while let Some(d) = chars.next_if(char::is_ascii_digit) {
                    out.push(d);
                }
                out.push('}');
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cases after Kafka's `SslPrincipalMapperTest`.
    #[test]
    fn rules_map_distinguished_names_as_kafka_does() {
        let mapper = PrincipalMapper::parse(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/, RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L, RULE:^cn=(.*?),ou=(.*?),dc=(.*?),dc=(.*?)$/$1@$2/U, RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/U, DEFAULT",
        )
        .unwrap();
        let name = |dn: &str| mapper.name(dn).unwrap();
        assert_eq!(name("CN=kafka1,OU=ServiceUsers,O=Org,C=US"), "kafka1");
        assert_eq!(
            name("CN=Duke,OU=JavaSoft,O=Sun Microsystems,L=Palo Alto,ST=CA,C=US"),
            "duke@javasoft"
        );
        assert_eq!(name("cn=duke,ou=javasoft,dc=soft,dc=com"), "DUKE@JAVASOFT");
        assert_eq!(name("cN=duke,OU=JavaSoft,O=Sun Microsystems"), "DUKE");
        assert_eq!(
            name("OU=JavaSoft,O=Sun Microsystems,C=US"),
            "OU=JavaSoft,O=Sun Microsystems,C=US"
        );
    }

    #[test]
    fn a_dn_no_rule_applies_to_is_refused_and_bad_rules_are_named() {
        let mapper = PrincipalMapper::parse("RULE:^CN=(.*)$/$1/").unwrap();
        assert_eq!(mapper.name("CN=app").as_deref(), Ok("app"));
        assert!(mapper.name("O=Org").unwrap_err().contains("O=Org"));
        assert!(PrincipalMapper::parse("RULE:^CN=(.*)$").is_err());
        assert!(PrincipalMapper::parse("RULE:(/x/")
            .unwrap_err()
            .contains("pattern"));
        assert!(PrincipalMapper::parse("NOPE").is_err());
        assert!(PrincipalMapper::parse("DEFAULT DEFAULT").is_err());
        // Escaped slashes, and a literal dollar in the replacement.
        let slashes = PrincipalMapper::parse(r"RULE:^CN=(.*)\/x$/\$$1\/y/").unwrap();
        assert_eq!(slashes.name("CN=a/x").as_deref(), Ok("$a/y"));
        assert_eq!(
            PrincipalMapper::default().name("CN=a").as_deref(),
            Ok("CN=a")
        );
    }
}
