//! Build checks BuildKit also reports, as [`Warning`]s with a location: `MaintainerDeprecated`,
//! `JSONArgsRecommended`, `SecretsUsedInArgOrEnv`, `LegacyKeyValueFormat`, and (from the parser)
//! `NoEmptyContinuation`. `UndefinedVar` and `UndefinedArgInFrom` need the build environment, so
//! the planner reports them.
//!
//! Rule names and triggers follow `moby/buildkit:frontend/dockerfile/docs/rules/*.md`; the other
//! BuildKit rules (casing, stage names, EXPOSE format…) are not implemented.
use super::ast::{Ast, Node, Span, Warning};
use super::instructions::{CommandLine, Instruction};
use regex::Regex;
use std::sync::OnceLock;

/// Whether an ARG or ENV name looks like it holds a secret (BuildKit's `SecretsUsedInArgOrEnv`).
pub fn is_secret_name(name: &str) -> bool {
    static RE: OnceLock<(Regex, Regex)> = OnceLock::new();
    let (secret, allowed) = RE.get_or_init(|| {
        (
            Regex::new(
                r"(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)(?:_|$)",
            )
            .expect("constant regex is valid"),
            Regex::new(r"(?i)(?:_|^)(?:public)(?:_|$)").expect("constant regex is valid"),
        )
    });
    secret.is_match(name) && !allowed.is_match(name)
}

fn push(out: &mut Vec<Warning>, ast: &Ast, rule: &'static str, message: String, span: Span) {
    out.push(Warning {
        rule,
        message,
        span,
        position: ast.position(span.start),
    });
}

/// Appends the warnings for one validated instruction.
pub(crate) fn check_instruction(i: &Instruction, node: &Node, ast: &Ast, out: &mut Vec<Warning>) {
    let kw = node.keyword_span;
    match i {
        Instruction::Maintainer { .. } => push(
            out,
            ast,
            "MaintainerDeprecated",
            "MAINTAINER instruction is deprecated in favor of using label".into(),
            kw,
        ),
        Instruction::Cmd {
            command: CommandLine::Shell(_),
        }
        | Instruction::Entrypoint {
            command: CommandLine::Shell(_),
        } => push(
            out,
            ast,
            "JSONArgsRecommended",
            format!(
                "JSON arguments recommended for {} to prevent unintended behavior related to OS signals",
                i.keyword()
            ),
            kw,
        ),
        Instruction::Arg { args } => {
            for a in args.iter().filter(|a| is_secret_name(&a.name)) {
                let msg = format!(
                    "do not use ARG or ENV instructions for sensitive data (ARG {:?})",
                    a.name
                );
                push(out, ast, "SecretsUsedInArgOrEnv", msg, a.span);
            }
        }
        Instruction::Env { pairs } | Instruction::Label { pairs } => {
            let env = matches!(i, Instruction::Env { .. });
            for p in pairs {
                if env && is_secret_name(&p.key) {
                    let msg = format!(
                        "do not use ARG or ENV instructions for sensitive data (ENV {:?})",
                        p.key
                    );
                    push(out, ast, "SecretsUsedInArgOrEnv", msg, p.span);
                }
                if p.legacy {
                    let msg = format!(
                        "\"{} key=value\" should be used instead of legacy \"{} key value\" format",
                        i.keyword(),
                        i.keyword()
                    );
                    push(out, ast, "LegacyKeyValueFormat", msg, p.span);
                }
            }
        }
        Instruction::Onbuild(o) => check_instruction(&o.trigger, node, ast, out),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        assert!(is_secret_name("API_KEY"));
        assert!(is_secret_name("password"));
        assert!(is_secret_name("GITHUB_TOKEN"));
        assert!(!is_secret_name("PUBLIC_KEY"));
        assert!(!is_secret_name("KEYBOARD"));
    }
}
